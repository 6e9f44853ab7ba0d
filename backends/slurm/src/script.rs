//! The batch script of one job: it runs the job's image with the runner in a container on the
//! node, with Docker's isolation, and stops that container when Slurm cancels the job or its
//! time runs out (Slurm's signal reaches the script and the docker client, not the container).

use std::path::Path;

use brizo_backend_core::{JobSpec, Mount};
use brizo_runner::{PLAN_URL_ENV, RUNNER_PATH};

/// Capabilities the runner needs inside the container, as root, before it drops to the job's
/// uid for good (after which the algorithm has none): to hand the writable folders to the job
/// (CHOWN), to become the job's uid (SETUID, SETGID) and to end what the job left (KILL).
const RUNNER_CAPS: [&str; 4] = ["CHOWN", "SETUID", "SETGID", "KILL"];

/// What the script is made from.
pub struct Script<'a> {
    pub spec: &'a JobSpec,
    /// The image to run (a pinned reference or an image id).
    pub image: &'a str,
    pub container: &'a str,
    /// The job's staging folder (shared with the service); bound at the same path.
    pub job_dir: &'a Path,
    pub plan_url: &'a str,
    /// Where the runner lies on the nodes.
    pub runner: &'a str,
    pub docker: &'a str,
    /// Read-only mounts bound straight from the shared filesystem.
    pub binds: &'a [Mount],
    pub scratch_mib: u64,
    pub container_mib: u64,
    pub labels: &'a [(String, String)],
}

/// Where the script reports how the container ended (its exit code, whether the kernel killed
/// it for memory): the proof it started, for the never-started rule.
pub const ENGINE_RESULT: &str = "engine.json";
/// Where Slurm writes the job's output (the container's, attached).
pub const LOG: &str = "slurm.log";

impl Script<'_> {
    pub fn render(&self) -> String {
        let q = |s: &str| shell_words::quote(s).into_owned();
        let spec = self.spec;
        let args = self.create_args();
        let create = args.iter().map(|a| q(a)).collect::<Vec<_>>().join(" ");
        let docker = q(self.docker);
        let name = q(self.container);
        let report = q(&self.job_dir.join(ENGINE_RESULT).display().to_string());
        format!(
            r#"#!/bin/sh
# brizo job {job}: its container, stopped with the job.
docker={docker}
name={name}
# Slurm may run a job again after its node failed; brizo runs each job once.
if [ "${{SLURM_RESTART_COUNT:-0}}" != 0 ]; then
  echo "brizo: Slurm started this job again after a failure; it runs once" >&2
  exit 75
fi
stopped=0
stop() {{ stopped=1; echo "brizo: Slurm ended the job (a cancel, or its time limit); stopping its container" >&2; "$docker" kill "$name" >/dev/null 2>&1; }}
trap stop TERM INT HUP
"$docker" rm -f "$name" >/dev/null 2>&1
began=$(date +%s)
if ! "$docker" {create} >/dev/null; then
  echo "brizo: the job's container could not be created on $(hostname)" >&2
  exit 125
fi
# Cancelled while the container was being made: it never starts (and nothing is reported, so
# the job counts as never started).
if [ "$stopped" = 1 ]; then "$docker" rm -f "$name" >/dev/null 2>&1; exit 143; fi
"$docker" start -a "$name" &
client=$!
# A signal interrupts wait; the trap stops the container, and the client then ends with it.
while kill -0 "$client" 2>/dev/null; do wait "$client"; done
code=$("$docker" inspect -f '{{{{.State.ExitCode}}}}' "$name" 2>/dev/null || echo 137)
oom=$("$docker" inspect -f '{{{{.State.OOMKilled}}}}' "$name" 2>/dev/null || echo false)
# Docker 20.10 can miss an OOM kill in that flag (its OOM event raced the exit) but still
# logs the event: a SIGKILL without the flag is checked in the engine's event log.
if [ "$code" = 137 ] && [ "$oom" != true ] && "$docker" events --since "$began" --until "$(($(date +%s) + 2))" \
    --filter "container=$name" --filter event=oom --format oom 2>/dev/null | grep -q oom; then
  oom=true
fi
printf '{{"exit_code": %s, "oom_killed": %s}}\n' "$code" "$oom" > {report}.partial && mv {report}.partial {report}
"$docker" rm -f "$name" >/dev/null 2>&1
exit "$code"
"#,
            job = spec.job_id,
        )
    }

    /// `docker create`'s arguments for the job's container: the runner as its entrypoint,
    /// isolated and limited as on every backend.
    fn create_args(&self) -> Vec<String> {
        let spec = self.spec;
        let mut args: Vec<String> = vec!["create".into(), "--name".into(), self.container.into()];
        for (k, v) in self.labels {
            args.extend(["--label".into(), format!("{k}={v}")]);
        }
        args.extend([
            "--network".into(),
            if spec.network {
                "bridge".into()
            } else {
                "none".into()
            },
        ]);
        // The runner starts as root to place read-only inputs, then drops to the job's uid.
        args.extend(["--user".into(), "0:0".into(), "--read-only".into()]);
        args.extend(["--cap-drop".into(), "ALL".into()]);
        for cap in RUNNER_CAPS {
            args.extend(["--cap-add".into(), cap.into()]);
        }
        args.extend(["--security-opt".into(), "no-new-privileges".into()]);
        args.extend([
            "--memory".into(),
            format!("{}m", self.container_mib),
            "--memory-swap".into(),
            format!("{}m", self.container_mib),
        ]);
        args.extend([
            "--cpus".into(),
            format!("{}", spec.limits.cpus),
            "--pids-limit".into(),
            (spec.limits.pids + 16).to_string(),
        ]);
        let tmpfs_mib = (spec.limits.tmpfs_bytes >> 20).max(1);
        args.extend([
            "--tmpfs".into(),
            format!("/tmp:rw,nosuid,nodev,size={tmpfs_mib}m"),
        ]);
        args.extend([
            "--tmpfs".into(),
            format!("/data:rw,nosuid,nodev,size={}m", self.scratch_mib),
        ]);
        // The root filesystem is read-only: a folder the runner must make elsewhere (a mount
        // target outside /data and /tmp) is in memory too, within the same ceiling.
        for target in extra_tmpfs(spec, self.binds) {
            args.extend([
                "--tmpfs".into(),
                format!("{target}:rw,nosuid,nodev,size={}m", self.scratch_mib),
            ]);
        }
        args.extend(["--log-driver".into(), "none".into()]);
        args.extend(["-e".into(), format!("{PLAN_URL_ENV}={}", self.plan_url)]);
        args.extend(["-v".into(), format!("{}:{RUNNER_PATH}:ro", self.runner)]);
        let job_dir = self.job_dir.display().to_string();
        args.extend(["-v".into(), format!("{job_dir}:{job_dir}:rw")]);
        for bind in self.binds {
            args.extend([
                "-v".into(),
                format!("{}:{}:ro", bind.source.display(), bind.target),
            ]);
        }
        // The image's entrypoint is replaced: the runner is the container's first process.
        args.extend(["--entrypoint".into(), RUNNER_PATH.into(), self.image.into()]);
        args
    }
}

/// Top-level folders of the spec's mount targets that are neither under `/data` or `/tmp` (in
/// memory already) nor bound in.
fn extra_tmpfs(spec: &JobSpec, binds: &[Mount]) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    for mount in spec
        .mounts
        .iter()
        .filter(|m| !binds.iter().any(|b| b.target == m.target))
    {
        let Some(top) = mount
            .target
            .trim_start_matches('/')
            .split('/')
            .next()
            .filter(|t| !t.is_empty())
        else {
            continue;
        };
        let top = format!("/{top}");
        if top != "/data" && top != "/tmp" && !out.contains(&top) {
            out.push(top);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use brizo_backend_core::Limits;

    #[test]
    fn the_container_gets_docker_s_isolation() {
        let spec = JobSpec {
            job_id: "j1".into(),
            image: "img".into(),
            command: vec!["python3".into(), "x.py".into()],
            env: vec![],
            mounts: vec![],
            fetch: vec![],
            working_dir: None,
            user: "65534:65534".into(),
            network: false,
            limits: Limits::default(),
            backstop_secs: None,
        };
        let binds = [Mount {
            source: "/shared/data sets/a".into(),
            target: "/data/inputs/a/0".into(),
            read_only: true,
        }];
        let script = Script {
            spec: &spec,
            image: "sha256:abc",
            container: "brizo-slurm-j1",
            job_dir: Path::new("/shared/staging/j1"),
            plan_url: "file:///shared/staging/j1/plan.json",
            runner: "/opt/brizo/brizo-runner",
            docker: "docker",
            binds: &binds,
            scratch_mib: 128,
            container_mib: 800,
            labels: &[("brizo.job-id".into(), "j1".into())],
        }
        .render();
        for needle in [
            "--network none",
            "--user 0:0 --read-only",
            "--cap-drop ALL --cap-add CHOWN --cap-add SETUID --cap-add SETGID --cap-add KILL",
            "--security-opt no-new-privileges",
            "--memory 800m --memory-swap 800m",
            "--pids-limit 144",
            "'/shared/data sets/a:/data/inputs/a/0:ro'",
            "/opt/brizo/brizo-runner:/opt/brizo/brizo-runner:ro",
            "trap stop TERM INT HUP",
            "{{.State.OOMKilled}}",
            "--filter event=oom",
        ] {
            assert!(script.contains(needle), "{needle:?} missing in:\n{script}");
        }
        assert!(!script.contains("--privileged"));
        // It is a valid shell script (what sbatch runs).
        let checked = std::process::Command::new("sh")
            .args(["-n", "-c", &script])
            .output()
            .unwrap();
        assert!(
            checked.status.success(),
            "{}\n{script}",
            String::from_utf8_lossy(&checked.stderr)
        );
    }
}
