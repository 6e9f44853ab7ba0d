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
