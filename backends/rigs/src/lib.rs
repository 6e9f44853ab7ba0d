//! Test rigs: the real engines and emulators brizo's tests and benchmarks run against (and,
//! for Azure Batch, which has no emulator, a stand-in server: [`azure_batch`]), each
//! started on this machine and stopped by PID when its handle drops (and by a watcher if the
//! test process dies first). Never a dependency of library code.

#[cfg(feature = "azure")]
pub mod azure_batch;
#[cfg(feature = "azure")]
pub mod azurite;
pub mod moto;
pub mod slurm;

use std::path::{Path, PathBuf};

/// The runner binary `scripts/runner.sh` builds, under the workspace's target folder.
pub fn built_runner(project_root: &Path) -> Result<PathBuf, String> {
    let path = project_root.join("target/x86_64-unknown-linux-musl/release/brizo-runner");
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing: build it with scripts/runner.sh",
            path.display()
        ))
    }
}

/// A TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
