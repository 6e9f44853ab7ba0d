//! The backend conformance suite against AWS Batch as moto emulates it: real job containers on
//! the local Docker engine, real S3 staging, the real static runner. Needs dockerd, the base
//! image, moto and the runner: `make test` prepares all of them (scripts/test.sh).

use std::path::{Path, PathBuf};

use brizo_backend_aws::{AwsBatchBackend, AwsBatchConfig, ImageSource};
use brizo_test_rigs::moto::{Moto, QUEUE, STAGING_BUCKET};
use brizo_test_rigs::{built_runner, free_port};
use sha2::Digest;

const IMAGE: &str = "brizo/python:3.11-bookworm";
/// A bucket of the publisher's data, which Batch jobs fetch from themselves.
const DATA_BUCKET: &str = "conformance-data";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The settings `terraform/modules/aws` would produce, pointed at moto.
fn config(moto: &Moto, runner: &Path) -> AwsBatchConfig {
    AwsBatchConfig {
        region: "us-east-1".into(),
        endpoint: moto.endpoint.clone(),
        job_queue: QUEUE.into(),
        staging: format!("s3://{STAGING_BUCKET}/jobs"),
        log_group: "/aws/batch/job".into(),
        job_definition_prefix: "brizo".into(),
        runner_host_path: runner.display().to_string(),
        images: ImageSource::Docker,
        url_ttl_secs: 3600,
        poll_ms: 300,
    }
}

/// One moto per test: tests run in parallel and each resets nothing of the others'.
struct Fixture {
    moto: Moto,
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
    let port = free_port();
    let moto = tokio::task::spawn_blocking(move || Moto::start(&root(), port, &[DATA_BUCKET]))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    let runner = built_runner(&root()).unwrap_or_else(|e| panic!("{e}"));
    let backend = brizo_backend_aws::connect(config(&moto, &runner), "conformance", "aws")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    Fixture { moto, backend }
}

fn backend_of(f: &Fixture) -> &dyn brizo_backend_core::ComputeBackend {
    &f.backend
}

brizo_backend_core::conformance_tests!(fixture().await, backend_of, IMAGE);

/// The rig stops what it started: a moto stopped with a job in flight leaves none of the
/// containers its Batch ran (it left them before, one or two per test run).
#[tokio::test]
async fn stopping_moto_leaves_no_container_behind() {
    let f = fixture().await;
    let port = f.moto.port();
    let spec = brizo_backend_core::conformance::sh(IMAGE, "sleep 300");
    brizo_backend_core::ComputeBackend::start(&f.backend, &spec)
        .await
        .unwrap_or_else(|e| panic!("start failed: {e}"));
    // moto starts the job's container from a thread of its own, a few seconds later.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while brizo_test_rigs::moto::containers_of(port).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "moto never started the job's container"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    drop(f);
    assert_eq!(
        brizo_test_rigs::moto::containers_of(port),
        Vec::<String>::new()
    );
}

/// Not part of the shared suite: which inputs a Batch job may fetch itself.
#[tokio::test]
async fn fetches_s3_objects_but_never_the_staging_bucket() {
    let f = fixture().await;
    let c = brizo_backend_core::ComputeBackend::capabilities(&f.backend);
    assert!(c.can_fetch("s3://datasets/weather/daily.csv"));
    assert!(
        !c.can_fetch(&format!("s3://{STAGING_BUCKET}/jobs/any/plan.json")),
        "the staging bucket holds other jobs' URLs"
    );
    assert!(
        !c.can_fetch("s3://datasets/weather/"),
        "a prefix is not an object"
    );
    assert!(!c.can_fetch("https://example.org/data.csv"));
    assert!(!c.can_fetch("file:///srv/datasets/x.csv"));
}

/// The shared checks of self-fetched inputs, on an object in moto's S3.
#[tokio::test]
async fn fetches_inputs_itself() {
    let f = fixture().await;
    let content = b"station,temp\nzurich,4.5\n";
    let store = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(DATA_BUCKET)
        .with_region("us-east-1")
        .with_endpoint(&f.moto.endpoint)
        .with_allow_http(true)
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .build()
        .unwrap();
    object_store::ObjectStoreExt::put(&store, &"weather/daily.csv".into(), content.to_vec().into())
        .await
        .unwrap();
    let sha = hex::encode(sha2::Sha256::digest(content));
    let url = format!("s3://{DATA_BUCKET}/weather/daily.csv");
    brizo_backend_core::conformance::fetches_inputs_itself(&f.backend, IMAGE, &url, content, &sha)
        .await;
    brizo_backend_core::conformance::missing_fetched_input_is_an_input_error(
        &f.backend,
        IMAGE,
        &format!("s3://{DATA_BUCKET}/weather/none.csv"),
    )
    .await;
}
