//! A moto server with AWS Batch set up as `terraform/modules/aws` would set up an account, for
//! tests, the benchmark and trying the backend locally. moto's Batch runs each job as a real
//! container on the local Docker engine, with host networking so the runner reaches moto's S3.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const QUEUE: &str = "brizo-jobs";
pub const STAGING_BUCKET: &str = "brizo-staging";

pub struct Moto {
    child: Child,
    port: u16,
    pub endpoint: String,
}

impl Moto {
    /// Starts moto_server on `port` (stopped by PID when dropped, and by a watcher if this
    /// process dies first) and creates the queue and `buckets` with `scripts/moto-batch.py`.
    pub fn start(project_root: &Path, port: u16, buckets: &[&str]) -> Result<Moto, String> {
        let endpoint = format!("http://127.0.0.1:{port}");
        // The watcher ends moto when this process ends, even by a panic or a signal.
        let script = format!(
            "MOTO_DOCKER_NETWORK_MODE=host moto_server -H 127.0.0.1 -p {port} >/dev/null 2>&1 & m=$!; \
             trap 'kill $m 2>/dev/null; exit 0' TERM; \
             while kill -0 {parent} 2>/dev/null && kill -0 $m 2>/dev/null; do sleep 1; done; kill $m 2>/dev/null; wait $m",
            parent = std::process::id()
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting moto_server: {e}"))?;
        let moto = Moto {
            child,
            port,
            endpoint,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(format!(
                    "moto_server did not come up on {}: is it installed? (scripts/test-deps.sh)",
                    moto.endpoint
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut setup = Command::new("python3");
        setup.arg(project_root.join("scripts/moto-batch.py")).args([
            "--endpoint",
            &moto.endpoint,
            "--queue",
            QUEUE,
            "--bucket",
            STAGING_BUCKET,
        ]);
        for b in buckets {
            setup.args(["--bucket", b]);
        }
        let out = setup
            .output()
            .map_err(|e| format!("running moto-batch.py: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "moto-batch.py failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(moto)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The environment the AWS SDK reads its credentials from; moto accepts any.
    pub fn credentials_env() -> [(&'static str, &'static str); 2] {
        [
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ]
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        remove_containers_of(self.port);
    }
}

/// Removes the containers moto's Batch ran for the server on `port`: it leaves those of jobs
/// still in flight when it stops, and some of those that ended.
fn remove_containers_of(port: u16) {
    let ours = containers_of(port);
    if !ours.is_empty() {
        let mut remove = vec!["rm".to_string(), "-f".to_string()];
        remove.extend(ours);
        let _ = docker(&remove);
    }
}

/// The ids of the containers moto's Batch ran for the server on `port`. moto gives each its
/// server's address in the environment (`MOTO_PORT`), which tells them from any other's.
pub fn containers_of(port: u16) -> Vec<String> {
    let Some(all) = docker(&["ps".into(), "-aq".into(), "--no-trunc".into()]) else {
        return vec![];
    };
    let ids: Vec<String> = all.split_whitespace().map(String::from).collect();
    if ids.is_empty() {
        return vec![];
    }
    let mut inspect = vec![
        "inspect".to_string(),
        "--format".to_string(),
        "{{.Id}}{{range .Config.Env}} {{.}}{{end}}".to_string(),
    ];
    inspect.extend(ids);
    // A container removed meanwhile makes inspect fail for it alone; the others still print.
    let envs = docker(&inspect).unwrap_or_default();
    let mark = format!("MOTO_PORT={port}");
    envs.lines()
        .filter(|line| line.split(' ').skip(1).any(|var| var == mark))
        .filter_map(|line| line.split(' ').next().map(String::from))
        .collect()
}

/// The docker CLI's output, or `None` when it could not run.
fn docker(args: &[String]) -> Option<String> {
    let out = Command::new("docker")
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}
