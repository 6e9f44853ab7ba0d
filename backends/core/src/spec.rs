use std::path::PathBuf;

/// Everything a backend needs to run one job, already resolved by the engine:
/// no URLs, no templates, only what goes into the isolated environment.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// The engine's job id; backends label what they create with it so that a restart
    /// (or a second look) finds the same run again.
    pub job_id: String,
    /// Image reference, `name:tag` (or a digest). Never pulled implicitly by the engine.
    pub image: String,
    /// argv of the process to run; no shell is involved unless argv names one.
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    /// Files the run fetches itself, for a backend that said it can ([`crate::ComputeBackend::fetches`]):
    /// data next to the backend never passes through the service host.
    pub fetch: Vec<RemoteFile>,
    pub working_dir: Option<String>,
    /// `uid:gid` the process runs as.
    pub user: String,
    /// Whether the run may reach any network at all.
    pub network: bool,
    pub limits: Limits,
    /// A ceiling for engines that go on while the service is away (a cloud batch queue): a
    /// little over the engine's own deadline, so a run the service lost still ends and stops
    /// costing. The engine's deadline stays the one that counts.
    pub backstop_secs: Option<u64>,
}

/// A file the run fetches from `url` (with the backend's credentials) to `target`, read-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    pub url: String,
    pub target: String,
    /// Larger than this, the input is refused.
    pub max_bytes: u64,
}

/// What a run fetched itself: the content it saw, for receipts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedFile {
    pub target: String,
    pub size: u64,
    pub sha256: String,
}

/// A host path bound into the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
}

/// Resource ceilings. The wall-clock timeout is not here: the engine keeps the deadline
/// itself so that it survives restarts and means the same on every backend.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub memory_bytes: u64,
    /// Fractional CPUs (1.5 = one and a half cores).
    pub cpus: f64,
    pub pids: i64,
    /// Size of the writable in-memory `/tmp`.
    pub tmpfs_bytes: u64,
    /// What the writable mounts may hold in total when the run ends. The engine checks it on
    /// the host; a remote backend enforces it before anything travels back.
    pub output_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 512 << 20,
            cpus: 1.0,
            pids: 128,
            tmpfs_bytes: 64 << 20,
            output_bytes: 256 << 20,
        }
    }
}
