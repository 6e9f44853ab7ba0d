//! Test rigs: the real engines and emulators brizo's tests and benchmarks run against (and,
//! for Azure Batch and Google Batch, which have no emulator, stand-in servers: [`azure_batch`],
//! [`gcp_batch`]), each started on this machine and stopped by PID when its handle drops (and by
//! a watcher if the test process dies first). Never a dependency of library code.

#[cfg(feature = "azure")]
pub mod azure_batch;
#[cfg(feature = "azure")]
pub mod azurite;
#[cfg(feature = "azure")]
pub mod entra;
#[cfg(feature = "gcp")]
pub mod gcp_batch;
#[cfg(feature = "gcp")]
pub mod gcs;
pub mod moto;
#[cfg(any(feature = "azure", feature = "gcp"))]
mod schema;
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

/// Checks the `docker create` options a batch service's task carries (Azure's
/// `containerRunOptions`, Google's `container.options`) isolate the run as brizo's own
/// containers are, for the conformance tests' spec (1.5 CPUs, 32 pids, for which the runner
/// keeps 64 more), plus `extra`, a backend's own.
#[cfg(any(feature = "azure", feature = "gcp"))]
pub fn assert_isolating_options(options: &str, extra: &[&str]) {
    let isolation = [
        "--read-only",
        "--cap-drop ALL",
        "--cpus 1.5",
        "--pids-limit 96",
        "no-new-privileges",
        "/out:rw,nosuid,nodev",
    ];
    for expected in isolation.iter().chain(extra) {
        assert!(options.contains(expected), "{expected} not in {options}");
    }
}

/// A TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Serves `handler` on `listener` from a thread of its own (an actix system), with `state` as
/// its app data and request bodies up to `max_body` bytes; the handle stops it.
#[cfg(any(feature = "azure", feature = "gcp"))]
pub(crate) fn serve<S, F, Args>(
    listener: std::net::TcpListener,
    state: std::sync::Arc<S>,
    handler: F,
    max_body: usize,
) -> Result<actix_web::dev::ServerHandle, String>
where
    S: Send + Sync + 'static,
    F: actix_web::Handler<Args> + Clone + Send + 'static,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    use actix_web::{App, HttpServer, web};
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let system = actix_web::rt::System::new();
        system.block_on(async move {
            let data = web::Data::new(state);
            let server = match HttpServer::new(move || {
                App::new()
                    .app_data(data.clone())
                    .app_data(web::PayloadConfig::new(max_body))
                    .default_service(web::to(handler.clone()))
            })
            .workers(2)
            .disable_signals()
            .listen(listener)
            {
                Ok(s) => s.run(),
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            };
            let _ = tx.send(Ok(server.handle()));
            let _ = server.await;
        });
    });
    rx.recv()
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("starting a test server: {e}"))
}

/// The shell line that removes every container labelled `label` (`key=value`), quietly.
#[cfg(any(feature = "azure", feature = "gcp"))]
fn remove_labelled(label: &str) -> String {
    format!("docker ps -aq --filter label={label} | xargs -r docker rm -f >/dev/null 2>&1")
}

/// Removes the containers labelled `label` now (a stand-in's, when it stops).
#[cfg(any(feature = "azure", feature = "gcp"))]
pub(crate) fn remove_containers(label: &str) {
    let _ = std::process::Command::new("sh")
        .args(["-c", &remove_labelled(label)])
        .status();
}

/// Removes the containers labelled `label` (`key=value`) once this test process is gone,
/// however it ended: a detached shell that waits for it. The stand-ins start one each.
#[cfg(any(feature = "azure", feature = "gcp"))]
pub(crate) fn reap_containers_after_exit(label: &str) -> Result<std::process::Child, String> {
    let watch = format!(
        "while kill -0 {parent} 2>/dev/null; do sleep 1; done; {remove}",
        parent = std::process::id(),
        remove = remove_labelled(label)
    );
    std::process::Command::new("setsid")
        .args(["sh", "-c", &watch])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("starting the stand-in's watcher: {e}"))
}

/// `docker <args>`, its output discarded and its failure ignored (a kill of a container that
/// has just ended, a removal of one already gone).
#[cfg(any(feature = "azure", feature = "gcp"))]
pub(crate) fn docker_quietly(args: &[&str]) {
    let _ = std::process::Command::new("docker")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}
