//! The backend conformance suite against AWS Batch as moto emulates it: real job containers on
//! the local Docker engine, real S3 staging, the real static runner. Needs dockerd, the base
//! image, moto and the runner: `make test` prepares all of them (scripts/test.sh).

use std::path::PathBuf;

use brizo_backend_aws::AwsBatchBackend;
use brizo_backend_aws::emulator::{Moto, built_runner};

const IMAGE: &str = "brizo/python:3.11-bookworm";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One moto per test: tests run in parallel and each resets nothing of the others'.
struct Fixture {
    _moto: Moto,
    backend: AwsBatchBackend,
}

async fn fixture() -> Fixture {
    for (k, v) in Moto::credentials_env() {
        // SAFETY: every test sets the same values; nothing reads them concurrently in a way
        // that could observe a torn write of a different value.
        unsafe { std::env::set_var(k, v) };
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let moto = tokio::task::spawn_blocking(move || Moto::start(&root(), port, &[])).await.unwrap().unwrap_or_else(|e| panic!("{e}"));
    let runner = built_runner(&root()).unwrap_or_else(|e| panic!("{e}"));
    let backend = AwsBatchBackend::connect(moto.config(&runner), "conformance", "aws").await.unwrap_or_else(|e| panic!("{e}"));
    Fixture { _moto: moto, backend }
}

fn backend_of(f: &Fixture) -> &dyn brizo_backend_core::ComputeBackend {
    &f.backend
}

brizo_backend_core::conformance_tests!(fixture().await, backend_of, IMAGE);
