//! Staging one job: the read-only mounts' files into the backend's [`Staging`] (or bound in
//! where the job's hosts share them), the inputs the run fetches itself, and the plan.

use std::path::{Path, PathBuf};

use brizo_backend_core::{BackendError, JobSpec, Mount};
use brizo_runner::{FileDownload, Plan, PlanLimits, WritableDir};

use crate::{Access, RemoteEngine, Staging};

pub(crate) struct Staged {
    pub plan_url: String,
    /// Writable mounts: their index in the spec and their host path.
    pub writable: Vec<(usize, PathBuf)>,
    /// Bytes of the files the runner places before the algorithm starts.
    pub staged_bytes: u64,
    /// Read-only mounts bound in where the job runs.
    pub binds: Vec<Mount>,
}

pub(crate) async fn stage<E: RemoteEngine + ?Sized>(
    engine: &E,
    spec: &JobSpec,
) -> Result<Staged, BackendError> {
    let staging = engine.staging().as_ref();
    let job = spec.job_id.as_str();
    let result_url = staging.url(job, "result.json", Access::Write).await?;
    let mut plan = plan_skeleton(spec, result_url);
    let mut writable = vec![];
    let mut binds = vec![];
    for (n, mount) in spec.mounts.iter().enumerate() {
        if !mount.read_only {
            let put_url = staging
                .url(job, &format!("out/{n}.tar"), Access::Write)
                .await?;
            plan.writable.push(WritableDir {
                path: mount.target.clone(),
                put_url,
            });
            writable.push((n, mount.source.clone()));
        } else if engine.shares(&mount.source) {
            binds.push(mount.clone());
        } else {
            copy_in(staging, spec, n, &mut plan).await?;
        }
    }
    // Data the run fetches itself goes straight from where it lies into the container.
    for remote in &spec.fetch {
        let (url, size) = engine.fetch_url(remote).await?;
        plan.files.push(FileDownload {
            url,
            path: remote.target.clone(),
            size,
        });
    }
    staging
        .put(
            job,
            "plan.json",
            serde_json::to_vec(&plan).expect("a plan serializes"),
        )
        .await?;
    let staged_bytes = plan.files.iter().map(|f| f.size).sum();
    Ok(Staged {
        plan_url: staging.url(job, "plan.json", Access::Read).await?,
        writable,
        staged_bytes,
        binds,
    })
}

/// The plan's command, environment and limits, before any file is in it.
fn plan_skeleton(spec: &JobSpec, result_url: String) -> Plan {
    Plan {
        dirs: vec![],
        files: vec![],
        writable: vec![],
        argv: spec.command.clone(),
        env: spec.env.clone(),
        working_dir: spec.working_dir.clone(),
        user: spec.user.clone(),
        limits: PlanLimits {
            memory_bytes: spec.limits.memory_bytes,
            pids: spec.limits.pids,
            output_bytes: spec.limits.output_bytes,
        },
        result_url,
    }
}

/// Copies read-only mount `n`'s files into staging, and adds them and its folders to the plan
/// for the runner to place.
async fn copy_in(
    staging: &dyn Staging,
    spec: &JobSpec,
    n: usize,
    plan: &mut Plan,
) -> Result<(), BackendError> {
    let job = spec.job_id.as_str();
    let mount = &spec.mounts[n];
    let source = mount.source.clone();
    let entries = tokio::task::spawn_blocking(move || list_tree(&source))
        .await
        .expect("listing does not panic")
        .map_err(|e| {
            BackendError::invalid_spec(format!("mount {}: {e}", mount.source.display()))
        })?;
    for (rel, is_dir) in entries {
        let here = rel.as_os_str().is_empty();
        let target = if here {
            mount.target.clone()
        } else {
            format!("{}/{}", mount.target, rel.display())
        };
        // A mount point of a more specific mount (a dataset inside the inputs folder) is
        // that mount's to fill.
        if spec
            .mounts
            .iter()
            .any(|m| m.target.len() > mount.target.len() && is_at_or_under(&target, &m.target))
        {
            continue;
        }
        if is_dir {
            plan.dirs.push(target);
            continue;
        }
        let name = if here {
            format!("in/{n}/file")
        } else {
            format!("in/{n}/{}", rel.display())
        };
        let size = staging
            .put_file(job, &name, &mount.source.join(&rel))
            .await?;
        plan.files.push(FileDownload {
            url: staging.url(job, &name, Access::Read).await?,
            path: target,
            size,
        });
    }
    Ok(())
}

fn is_at_or_under(path: &str, prefix: &str) -> bool {
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Paths under `root` relative to it (the empty path for `root` itself), with whether each is a
/// folder. Symlinks are not followed, and not staged: they could point anywhere on this host.
fn list_tree(root: &Path) -> std::io::Result<Vec<(PathBuf, bool)>> {
    let mut out = vec![];
    for entry in walkdir::WalkDir::new(root)
        .follow_links(false)
        .follow_root_links(true)
    {
        let entry = entry.map_err(std::io::Error::other)?;
        let rel = entry
            .path()
            .strip_prefix(root)
            .expect("walkdir stays under its root")
            .to_path_buf();
        if entry.file_type().is_dir() {
            out.push((rel, true));
        } else if entry.file_type().is_file() {
            out.push((rel, false));
        }
    }
    Ok(out)
}
