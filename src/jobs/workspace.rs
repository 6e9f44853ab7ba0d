//! A job's folder on the host and the container layout algorithms already know:
//! `/data/inputs/<name>/<n>` (read-only), `/data/transformations/algorithm` (read-only),
//! `/data/outputs` and `/data/logs` (writable).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use brizo_backend_core::{JobSpec, Limits, Mount};

use super::model::{InputSource, JobRequest};
use crate::config::Config;

pub const VOLUME: &str = "/data";
pub const ALGO_PATH: &str = "/data/transformations/algorithm";
pub const DEFAULT_INPUT_NAME: &str = "input";
/// How much longer than the job's timeout a remote engine lets a run go on its own.
const BACKSTOP_GRACE_SECS: u64 = 300;

/// An input with its place inside the container.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacedInput {
    pub name: String,
    pub index: usize,
    pub url: String,
}

impl PlacedInput {
    pub fn rel(&self) -> String {
        format!("{}/{}", self.name, self.index)
    }

    /// Where the algorithm finds it.
    pub fn target(&self) -> String {
        format!("{VOLUME}/inputs/{}", self.rel())
    }
}

/// Numbers inputs that share a name 0, 1, 2... in request order.
pub fn place_inputs(inputs: &[InputSource]) -> Vec<PlacedInput> {
    let mut counts = std::collections::HashMap::<String, usize>::new();
    inputs
        .iter()
        .map(|i| {
            let name = i
                .name
                .clone()
                .unwrap_or_else(|| DEFAULT_INPUT_NAME.to_string());
            let n = counts.entry(name.clone()).or_default();
            let placed = PlacedInput {
                name,
                index: *n,
                url: i.url.clone(),
            };
            *n += 1;
            placed
        })
        .collect()
}

#[derive(Clone)]
pub struct Workspace {
    pub root: PathBuf,
}

impl Workspace {
    pub fn new(jobs_dir: &Path, job_id: &str) -> Self {
        Self {
            root: jobs_dir.join(job_id),
        }
    }
    pub fn inputs(&self) -> PathBuf {
        self.root.join("inputs")
    }
    pub fn algorithm(&self) -> PathBuf {
        self.root.join("transformations").join("algorithm")
    }
    /// Everything the algorithm may write: its own size-limited filesystem when the job has
    /// a disk quota ([`super::disk`]).
    pub fn disk(&self) -> PathBuf {
        self.root.join("disk")
    }
    pub fn outputs(&self) -> PathBuf {
        self.disk().join("outputs")
    }
    pub fn logs(&self) -> PathBuf {
        self.disk().join("logs")
    }

    /// Lays out an empty workspace, wiping whatever an interrupted attempt left. With `disk`
    /// (a size, and the folder of blank disks), what the algorithm writes goes to a
    /// filesystem of that size.
    pub async fn create(&self, run_as: &str, disk: Option<(u64, &Path)>) -> std::io::Result<()> {
        let (ws, run_as) = (self.clone(), run_as.to_owned());
        let disk = disk.map(|(bytes, blanks)| (bytes, blanks.to_owned()));
        // The whole layout in one blocking call: each tokio::fs call is a trip to the
        // blocking pool and back, two thread switches, and a layout is a dozen of them.
        tokio::task::spawn_blocking(move || {
            ws.lay_out(&run_as, disk.as_ref().map(|(n, b)| (*n, b.as_path())))
        })
        .await?
    }

    fn lay_out(&self, run_as: &str, disk: Option<(u64, &Path)>) -> std::io::Result<()> {
        self.remove_now()?;
        let open = || std::fs::Permissions::from_mode(0o755);
        for dir in [
            self.inputs(),
            self.root.join("transformations"),
            self.disk(),
        ] {
            std::fs::create_dir_all(&dir)?;
            std::fs::set_permissions(&dir, open())?;
        }
        std::fs::set_permissions(&self.root, open())?;
        if let Some((bytes, blanks)) = disk {
            super::disk::attach(blanks, &self.root.join("disk.img"), &self.disk(), bytes)?;
        }
        for dir in [self.outputs(), self.logs()] {
            std::fs::create_dir(&dir)?;
            std::fs::set_permissions(&dir, open())?;
            // The algorithm runs as another uid: give it the folders it writes to.
            give_to(&dir, run_as)?;
        }
        Ok(())
    }

    /// Removes the folder, its disk unmounted first.
    pub async fn remove(&self) -> std::io::Result<()> {
        let ws = self.clone();
        tokio::task::spawn_blocking(move || ws.remove_now()).await?
    }

    fn remove_now(&self) -> std::io::Result<()> {
        super::disk::unmount(&self.disk())?;
        match std::fs::remove_dir_all(&self.root) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

/// chown to `uid:gid` when we may (root); otherwise open the folder to everyone.
fn give_to(dir: &Path, run_as: &str) -> std::io::Result<()> {
    let mut parts = run_as.split(':').map(|p| p.parse::<u32>().ok());
    let (uid, gid) = (parts.next().flatten(), parts.next().flatten());
    if std::os::unix::fs::chown(dir, uid, gid.or(uid)).is_err() {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))?;
    }
    Ok(())
}

/// The container the job runs in. `file_inputs` are the host paths of file:// inputs
/// (already checked to lie under a dataset root), keyed by their place.
pub fn build_spec(
    config: &Config,
    job_id: &str,
    request: &JobRequest,
    timeout_secs: u64,
    ws: &Workspace,
    file_inputs: &[(PlacedInput, PathBuf)],
) -> Result<JobSpec, String> {
    let command = command_line(&request.entrypoint)?;
    let mut mounts = vec![
        Mount {
            source: ws.inputs(),
            target: format!("{VOLUME}/inputs"),
            read_only: true,
        },
        Mount {
            source: ws.root.join("transformations"),
            target: format!("{VOLUME}/transformations"),
            read_only: true,
        },
        Mount {
            source: ws.outputs(),
            target: format!("{VOLUME}/outputs"),
            read_only: false,
        },
        Mount {
            source: ws.logs(),
            target: format!("{VOLUME}/logs"),
            read_only: false,
        },
    ];
    for (placed, host) in file_inputs {
        mounts.push(Mount {
            source: host.clone(),
            target: placed.target(),
            read_only: true,
        });
    }
    let mut names: Vec<String> = place_inputs(&request.inputs)
        .into_iter()
        .map(|p| p.name)
        .collect();
    names.dedup();
    let env = vec![
        (
            "DIDS".to_string(),
            serde_json::to_string(&names).expect("names serialize"),
        ),
        (
            "TRANSFORMATION_DID".to_string(),
            request.algorithm.did.clone().unwrap_or_default(),
        ),
        ("VOLUME".to_string(), VOLUME.to_string()),
        ("INPUTS".to_string(), format!("{VOLUME}/inputs")),
        ("OUTPUTS".to_string(), format!("{VOLUME}/outputs")),
        ("LOGS".to_string(), format!("{VOLUME}/logs")),
        ("ALGO".to_string(), ALGO_PATH.to_string()),
        // Read-only root filesystem: tools that want a home get the writable /tmp.
        ("HOME".to_string(), "/tmp".to_string()),
    ];
    Ok(JobSpec {
        job_id: job_id.to_string(),
        image: request.image.clone(),
        command,
        env,
        mounts,
        fetch: vec![],
        working_dir: Some("/tmp".to_string()),
        user: config.limits.user.clone(),
        network: request.network,
        limits: Limits {
            memory_bytes: config.limits.memory_mb << 20,
            cpus: config.limits.cpus,
            pids: config.limits.pids,
            tmpfs_bytes: config.limits.tmpfs_mb << 20,
            output_bytes: config.outputs.max_output_mb << 20,
        },
        backstop_secs: Some(timeout_secs + BACKSTOP_GRACE_SECS),
    })
}

/// argv from the entrypoint: `$ALGO` becomes the algorithm's path; words split as a shell
/// would, but no shell runs (the image need not have one).
pub fn command_line(entrypoint: &str) -> Result<Vec<String>, String> {
    let expanded = entrypoint
        .replace("${ALGO}", ALGO_PATH)
        .replace("$ALGO", ALGO_PATH);
    let argv =
        shell_words::split(&expanded).map_err(|e| format!("entrypoint {entrypoint:?}: {e}"))?;
    if argv.is_empty() {
        return Err(
            "entrypoint is empty; give the command that runs the algorithm, e.g. \"python3 $ALGO\""
                .into(),
        );
    }
    Ok(argv)
}

/// Resolves a file:// input to a host path under one of `roots`, or says why not.
pub fn resolve_dataset_path(url: &str, roots: &[PathBuf]) -> Result<PathBuf, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("{url}: not a URL ({e})"))?;
    let path = parsed
        .to_file_path()
        .map_err(|_| format!("{url}: not a local file path"))?;
    let real = path.canonicalize().map_err(|e| format!("{url}: {e}"))?;
    let inside = roots
        .iter()
        .filter_map(|r| r.canonicalize().ok())
        .any(|root| real.starts_with(&root) && real != root);
    if !inside {
        let shown: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
        return Err(format!(
            "{url}: file inputs must lie under a dataset root ({})",
            shown.join(", ")
        ));
    }
    Ok(real)
}

/// A folder name under /data/inputs: a dataset name or a DID, nothing that climbs out.
pub fn valid_input_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entrypoint_expands_algo_and_splits_words() {
        assert_eq!(
            command_line("python3 $ALGO --flag 'two words'").unwrap(),
            vec!["python3", ALGO_PATH, "--flag", "two words"]
        );
        assert_eq!(
            command_line("node ${ALGO}").unwrap(),
            vec!["node", ALGO_PATH]
        );
        assert!(command_line("   ").is_err());
        assert!(command_line("python3 'unclosed").is_err());
    }

    #[test]
    fn inputs_sharing_a_name_are_numbered() {
        let i = |url: &str, name: Option<&str>| InputSource {
            url: url.into(),
            name: name.map(Into::into),
        };
        let placed = place_inputs(&[
            i("a", None),
            i("b", Some("d1")),
            i("c", None),
            i("d", Some("d1")),
        ]);
        let rels: Vec<String> = placed.iter().map(|p| p.rel()).collect();
        assert_eq!(rels, vec!["input/0", "d1/0", "input/1", "d1/1"]);
    }

    #[test]
    fn dataset_paths_stay_under_their_roots() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("ok.csv"), "1").unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root.path().join("link"))
            .unwrap();
        let roots = vec![root.path().to_path_buf()];
        let url = |p: &Path| format!("file://{}", p.display());
        assert!(resolve_dataset_path(&url(&root.path().join("ok.csv")), &roots).is_ok());
        assert!(resolve_dataset_path(&url(&outside.path().join("secret")), &roots).is_err());
        assert!(
            resolve_dataset_path(&url(&root.path().join("link")), &roots).is_err(),
            "symlinks out are refused"
        );
        assert!(resolve_dataset_path(&format!("{}/../{}", url(root.path()), "x"), &roots).is_err());
        assert!(
            resolve_dataset_path(&url(root.path()), &roots).is_err(),
            "the root itself is not an input"
        );
        assert!(resolve_dataset_path(&url(&root.path().join("missing")), &roots).is_err());
    }

    #[test]
    fn input_names_cannot_climb_out() {
        assert!(valid_input_name("did:op:0123abc"));
        assert!(valid_input_name("census-2020.v1"));
        for bad in ["", ".", "..", "a/b", "../x", "a b"] {
            assert!(!valid_input_name(bad), "{bad:?}");
        }
    }
}
