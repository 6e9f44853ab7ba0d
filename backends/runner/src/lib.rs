//! What a remote backend asks the runner to do for one job.
//!
//! A remote engine (AWS Batch, and later other batch services) runs the job's image on a machine
//! that has neither the service's disk nor its credentials. The backend writes a [`Plan`] next
//! to the job's staged files in object storage and hands the container one presigned URL to it.
//! The runner, a static binary the compute environment provides, fetches what the plan lists
//! through presigned URLs, runs the algorithm as an unprivileged user under the plan's limits,
//! and sends back the writable folders and a [`RunResult`] the same way. Presigned URLs let the
//! container read and write exactly these objects and nothing else, for a limited time.

use serde::{Deserialize, Serialize};

/// The environment variable that carries the plan's presigned URL into the container.
pub const PLAN_URL_ENV: &str = "BRIZO_PLAN_URL";
/// Where the compute environment provides the runner inside job containers.
pub const RUNNER_PATH: &str = "/opt/brizo/brizo-runner";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Plan {
    /// Folders to create (owned by root, read-only to the job), e.g. empty mount points.
    pub dirs: Vec<String>,
    /// Files to download before the algorithm starts; readable, not writable, by the job.
    pub files: Vec<FileDownload>,
    /// Folders the job may write; each is sent back as one tar archive after the run.
    pub writable: Vec<WritableDir>,
    /// argv of the algorithm; no shell unless argv names one.
    pub argv: Vec<String>,
    /// The algorithm's whole environment (nothing of the runner's leaks into it).
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    /// `uid:gid` the algorithm runs as; never root.
    pub user: String,
    pub limits: PlanLimits,
    /// Presigned PUT for the [`RunResult`].
    pub result_url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileDownload {
    pub url: String,
    pub path: String,
    /// The object's size; a download of another length fails the job.
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WritableDir {
    pub path: String,
    /// Presigned PUT for the folder's tar archive.
    pub put_url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PlanLimits {
    pub memory_bytes: u64,
    pub pids: i64,
    /// What the writable folders may hold in total; over it, nothing is sent back.
    pub output_bytes: u64,
}

/// What the runner reports once the algorithm ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunResult {
    /// The algorithm's exit code; 128 + signal when a signal ended it (137: killed).
    pub exit_code: i64,
    /// The algorithm went over its memory limit and was killed for it.
    pub oom_killed: bool,
    /// Set when the runner itself failed (a download, an upload); the algorithm may not have run.
    pub runner_error: Option<String>,
    /// What was downloaded, as the runner saw it (for receipts).
    #[serde(default)]
    pub files: Vec<Downloaded>,
    /// Whether the algorithm was started at all: a job that never ran is not work done.
    #[serde(default)]
    pub algorithm_started: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Downloaded {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}
