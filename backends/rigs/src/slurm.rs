//! A real one-node Slurm cluster (munged, slurmctld, slurmd, slurmrestd with JWT) on ports of
//! its own, started by `scripts/slurm.sh` in a folder of its own, for tests and benchmarks.
//! Stopped by PID when dropped, and by a watcher when the test process ends first (statics
//! are never dropped).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::free_port;

pub struct Slurm {
    pub dir: PathBuf,
    /// slurmrestd, `http://127.0.0.1:PORT`.
    pub url: String,
    /// A file holding a JWT for root.
    pub token_file: PathBuf,
    /// `SLURM_CONF` for Slurm's own clients (scontrol, scancel) against this cluster.
    pub conf: PathBuf,
    script: PathBuf,
}

impl Slurm {
    pub fn start(project_root: &Path) -> Result<Slurm, String> {
        let dir = std::env::temp_dir().join(format!(
            "brizo-slurm-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let script = project_root.join("scripts/slurm.sh");
        let (ctld, slurmd, rest) = (free_port(), free_port(), free_port());
        let out = Command::new("bash")
            .arg(&script)
            .args(["start", &dir.display().to_string()])
            .env("SLURM_CTLD_PORT", ctld.to_string())
            .env("SLURMD_PORT", slurmd.to_string())
            .env("SLURM_REST_PORT", rest.to_string())
            .output()
            .map_err(|e| format!("running scripts/slurm.sh: {e}"))?;
        // The watcher stops this cluster when the test process ends, however it ends.
        let watch = format!(
            "while kill -0 {parent} 2>/dev/null; do sleep 1; done; bash {script} stop {dir}",
            parent = std::process::id(),
            script = script.display(),
            dir = dir.display()
        );
        Command::new("setsid")
            .args(["sh", "-c", &watch])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting the Slurm watcher: {e}"))?;
        let slurm = Slurm {
            url: format!("http://127.0.0.1:{rest}"),
            token_file: dir.join("token"),
            conf: dir.join("slurm.conf"),
            dir,
            script,
        };
        if !out.status.success() {
            return Err(format!(
                "scripts/slurm.sh start failed (does the machine have Debian's Slurm? the script installs it): {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let token = slurm.run(&["token"])?;
        std::fs::write(&slurm.token_file, token.trim()).map_err(|e| e.to_string())?;
        Ok(slurm)
    }

    fn run(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("bash")
            .arg(&self.script)
            .args(args)
            .arg(&self.dir)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "scripts/slurm.sh {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs one of Slurm's own clients against this cluster (`scancel 12`), as an operator
    /// would from outside brizo.
    pub fn client(&self, program: &str, args: &[&str]) -> Result<String, String> {
        let out = Command::new(program)
            .args(args)
            .env("SLURM_CONF", &self.conf)
            .output()
            .map_err(|e| format!("{program}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{program} {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Slurm {
    fn drop(&mut self) {
        let _ = self.run(&["stop"]);
    }
}
