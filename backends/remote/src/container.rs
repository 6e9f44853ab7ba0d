//! The `docker create` options of a remote job's container, for the services that start the
//! container from a line of options (Azure Batch's `containerRunOptions`, Google Batch's
//! `container.options`): the same isolation as the local engine's, the runner's few
//! capabilities, and in-memory folders sized for the job.

use brizo_backend_core::JobSpec;

/// A remote job's container: its `docker create` options and the memory it is given.
pub struct ContainerOptions {
    pub options: Vec<String>,
    /// The container's memory ceiling: the algorithm's, plus the runner and the in-memory
    /// folders around it.
    pub memory_mib: u64,
}

impl ContainerOptions {
    /// For `spec`, whose staged files take `staged_bytes`.
    pub fn for_spec(spec: &JobSpec, staged_bytes: u64) -> Self {
        // `/data` is in memory on the job's host: room for the job's files and its outputs.
        let scratch_mib = ((staged_bytes + spec.limits.output_bytes) >> 20).max(64) + 64;
        let tmpfs_mib = (spec.limits.tmpfs_bytes >> 20).max(1);
        let memory_mib = (spec.limits.memory_bytes >> 20).max(4);
        // The container holds the runner and the in-memory folders besides the algorithm,
        // whose own ceiling the runner enforces.
        let container_mib = memory_mib + tmpfs_mib + scratch_mib + 64;
        let tmpfs = |path: &str, mib: u64| format!("{path}:rw,nosuid,nodev,size={mib}m");
        let mut options: Vec<String> = vec![
            // The runner starts as root to place read-only inputs, then drops to the job's uid
            // for good before the algorithm runs.
            "--user".into(),
            "0".into(),
            "--read-only".into(),
            "--security-opt".into(),
            "no-new-privileges".into(),
            "--cap-drop".into(),
            "ALL".into(),
        ];
        // The runner needs these to place read-only inputs (CHOWN), to become the job's uid
        // (SETUID, SETGID) and to end what the job left (KILL); it gives them up with root.
        for cap in ["CHOWN", "SETUID", "SETGID", "KILL"] {
            options.extend(["--cap-add".into(), cap.into()]);
        }
        options.extend([
            "--memory".into(),
            format!("{container_mib}m"),
            "--memory-swap".into(),
            format!("{container_mib}m"),
            "--cpus".into(),
            format!("{}", spec.limits.cpus.max(0.01)),
            // The runner holds the algorithm to its own pids limit; this one is the container's.
            "--pids-limit".into(),
            format!("{}", spec.limits.pids.max(1) + 64),
            "--tmpfs".into(),
            tmpfs("/tmp", tmpfs_mib),
            "--tmpfs".into(),
            tmpfs("/data", scratch_mib),
        ]);
        // Mount targets outside /data and /tmp get an in-memory folder of their own: the root
        // filesystem is read-only.
        let mut covered = vec!["/tmp".to_string(), "/data".to_string()];
        for mount in &spec.mounts {
            let target = mount.target.trim_end_matches('/').to_string();
            if covered
                .iter()
                .any(|c| target == *c || target.starts_with(&format!("{c}/")))
            {
                continue;
            }
            options.extend(["--tmpfs".into(), tmpfs(&target, scratch_mib)]);
            covered.push(target);
        }
        Self {
            options,
            memory_mib: container_mib,
        }
    }
}
