//! The backend conformance suite against the real local Docker engine.
//! Needs dockerd and the base image: `scripts/dockerd.sh start && scripts/base-image.sh`.

use brizo_backend_docker::DockerBackend;

const IMAGE: &str = "brizo/python:3.11-bookworm";

async fn backend() -> DockerBackend {
    DockerBackend::connect(None, "conformance", "conformance").await.unwrap_or_else(|e| {
        panic!("{e}\nstart the engine and build the image with: scripts/dockerd.sh start && scripts/base-image.sh")
    })
}

brizo_backend_core::conformance_tests!(backend().await, IMAGE);

/// Docker can miss an OOM kill in `State.OOMKilled` (its OOM event raced the exit); the backend
/// then reads the engine's event log. The race itself cannot be forced from here, so this checks
/// the reading both ways on the real engine: an OOM-killed run is found in the log, a run killed
/// by `stop` (the same exit code, 137) is not.
#[tokio::test]
async fn the_engine_log_tells_an_oom_kill_from_a_stop() {
    use brizo_backend_core::ComputeBackend;
    use brizo_backend_core::conformance::{sh, spec};

    let b = backend().await;
    let mut oom = spec(IMAGE, &["python3", "-c", "x = bytearray(512 << 20)"]);
    oom.limits.memory_bytes = 64 << 20;
    b.start(&oom).await.unwrap();
    let exit = b.wait(&oom.job_id).await.unwrap();
    assert_eq!(exit.exit_code, 137);
    assert!(exit.oom_killed);
    assert!(b.oom_logged(&oom.job_id, None).await.unwrap());
    b.remove(&oom.job_id).await.unwrap();

    let stopped = sh(IMAGE, "sleep 300");
    b.start(&stopped).await.unwrap();
    b.stop(&stopped.job_id).await.unwrap();
    let exit = b.wait(&stopped.job_id).await.unwrap();
    assert_eq!(exit.exit_code, 137);
    assert!(!b.oom_logged(&stopped.job_id, None).await.unwrap());
    b.remove(&stopped.job_id).await.unwrap();
}

/// The receipt names the image's id that `start` answers; the container is made from that id,
/// not from the name, so a name re-tagged between the look-up and the create cannot run in
/// its place.
#[tokio::test]
async fn the_container_runs_the_image_id_start_names() {
    use brizo_backend_core::ComputeBackend;
    use brizo_backend_core::conformance::sh;

    let b = backend().await;
    let job = sh(IMAGE, "true");
    let info = b.start(&job).await.unwrap();
    assert!(info.image_digest.starts_with("sha256:"), "{info:?}");
    let docker = bollard::Docker::connect_with_local_defaults().unwrap();
    let made = docker.inspect_container(&info.run_id, None).await.unwrap();
    assert_eq!(made.image.as_deref(), Some(info.image_digest.as_str()));
    let config = made.config.unwrap();
    assert_eq!(config.image.as_deref(), Some(info.image_digest.as_str()));
    // The name it was asked by stays on the container, for whoever lists them.
    let labels = config.labels.unwrap_or_default();
    assert_eq!(
        labels
            .get(brizo_backend_docker::LABEL_IMAGE)
            .map(String::as_str),
        Some(IMAGE)
    );
    let named = docker.inspect_image(IMAGE).await.unwrap();
    assert_eq!(named.id.as_deref(), Some(info.image_digest.as_str()));
    b.wait(&job.job_id).await.unwrap();
    b.remove(&job.job_id).await.unwrap();
}
