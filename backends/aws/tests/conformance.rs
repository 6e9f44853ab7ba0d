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
    static CREDENTIALS: std::sync::Once = std::sync::Once::new();
    CREDENTIALS.call_once(|| {
        for (k, v) in Moto::credentials_env() {
            // SAFETY: every test passes through this Once before anything of it reads the
            // environment, and the others wait here until it is done.
            unsafe { std::env::set_var(k, v) };
        }
    });
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

/// Not part of the shared suite: which inputs a Batch job may fetch itself.
#[tokio::test]
async fn fetches_s3_objects_but_never_the_staging_bucket() {
    let f = fixture().await;
    let b: &dyn brizo_backend_core::ComputeBackend = &f.backend;
    assert!(b.fetches("s3://datasets/weather/daily.csv"));
    assert!(!b.fetches(&format!("s3://{}/jobs/any/plan.json", brizo_backend_aws::emulator::STAGING_BUCKET)), "the staging bucket holds other jobs' URLs");
    assert!(!b.fetches("s3://datasets/weather/"), "a prefix is not an object");
    assert!(!b.fetches("https://example.org/data.csv"));
    assert!(!b.fetches("file:///srv/datasets/x.csv"));
}
