//! The AWS Batch backend through the service, against moto (started here, stopped by PID):
//! an S3 dataset routed to Batch, a local one to Docker, outputs in the results bucket with
//! their hashes, logs, stop, and a service restart while a Batch job runs. moto's Batch runs
//! the job containers on the local Docker engine, with the real static runner inside.
//! Built with `--features aws` (`make test` does).
#![cfg(feature = "aws")]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use brizo_test_rigs::built_runner;
use brizo_test_rigs::moto::{Moto, QUEUE, STAGING_BUCKET};
use common::Service;
use common::weather::{self, CSV, SUMMARY, job_on};
use futures::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sha2::Digest;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Setup {
    moto: Moto,
    svc: Service,
    results: AmazonS3,
}

type AmazonS3 = object_store::aws::AmazonS3;

fn bucket(moto: &Moto, name: &str) -> AmazonS3 {
    common::moto_bucket(&moto.endpoint, name)
}

async fn setup() -> Setup {
    setup_with("").await
}

/// `extra`: TOML appended to the service's configuration.
async fn setup_with(extra: &str) -> Setup {
    let port = common::free_port();
    let moto =
        tokio::task::spawn_blocking(move || Moto::start(&root(), port, &["datasets", "results"]))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{e}"));
    let runner = built_runner(&root()).unwrap_or_else(|e| panic!("{e}"));
    bucket(&moto, "datasets")
        .put(&"weather/daily.csv".into(), PutPayload::from_static(CSV))
        .await
        .unwrap();
    let config = format!(
        r#"
backend = "local"
[[backends]]
name = "local"
kind = "docker"
[[backends]]
name = "aws"
kind = "aws-batch"
near = ["s3://datasets"]
[backends.aws]
region = "us-east-1"
endpoint = "{endpoint}"
job_queue = "{QUEUE}"
staging = "s3://{STAGING_BUCKET}/jobs"
runner_host_path = "{runner}"
poll_ms = 300
images = "docker"
[outputs]
results_url = "s3://results/brizo"
{extra}
"#,
        endpoint = moto.endpoint,
        runner = runner.display()
    );
    // object_store (inputs, results) and the AWS SDK (the backend) read the same variables.
    let env = [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT", moto.endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
    ];
    let svc = Service::start_with_config(&env, &config).await;
    let results = bucket(&moto, "results");
    Setup { moto, svc, results }
}

/// The dataset in the publisher's bucket, which jobs fetch where it lies.
const S3_INPUT: &str = "s3://datasets/weather/daily.csv";

fn job_on_s3(code: &str) -> serde_json::Value {
    job_on(code, S3_INPUT)
}

#[tokio::test]
async fn s3_data_runs_on_batch_and_local_data_on_docker() {
    let s = setup().await;
    let id = s.svc.submit(job_on_s3(SUMMARY)).await;
    let job = s.svc.wait_finished(&id, Duration::from_secs(180)).await;
    assert_eq!(
        job["outcome"],
        "succeeded",
        "{job}\n{}",
        s.svc.logs(&id).await
    );
    assert_eq!(job["backend"], "aws", "{job}");
    assert!(
        job["backendReason"]
            .as_str()
            .unwrap()
            .contains("s3://datasets"),
        "{job}"
    );
    let logs = s.svc.logs(&id).await;
    assert!(logs.contains("rows 3 as uid 65534"), "{logs}");

    // The output is in the results bucket, with the size and hash the job reports.
    let stored = common::stored(&s.results, &format!("brizo/{id}/outputs/summary.txt")).await;
    let reported = weather::assert_summary_stored(&job, &stored);
    let log = common::stored(&s.results, &format!("brizo/{id}/logs/algorithm.log")).await;
    assert!(String::from_utf8_lossy(&log).contains("rows 3"));

    // The dataset went from its bucket straight into the job's container: the receipt's digest
    // of it is the runner's, taken as it downloaded, and it matches the object.
    let receipt = s.svc.receipt(&id).await;
    let input = &receipt["receipt"]["inputs"][0];
    assert_eq!(
        input["sha256"],
        hex::encode(sha2::Sha256::digest(CSV)),
        "{receipt}"
    );
    assert_eq!(input["size"], CSV.len(), "{receipt}");
    assert_eq!(
        receipt["receipt"]["outputs"][0]["sha256"], reported["sha256"],
        "{receipt}"
    );

    // Once finished, nothing of the job is left in the staging bucket.
    s.svc.wait_cleaned(&id).await;
    let staged: Vec<_> = bucket(&s.moto, STAGING_BUCKET)
        .list(None)
        .collect::<Vec<_>>()
        .await;
    assert!(
        staged
            .iter()
            .all(|m| !m.as_ref().unwrap().location.as_ref().contains(&id)),
        "staging left behind: {staged:?}"
    );

    weather::runs_local_data_on_docker(&s.svc).await;
}

#[tokio::test]
async fn stop_terminates_and_a_restart_reattaches() {
    let mut s = setup().await;
    // A job the service is killed under: the restarted service finds it on Batch again.
    let id = weather::running_slow_job(&s.svc, S3_INPUT).await;
    plan_points_at_the_dataset_where_it_lies(&s, &id).await;
    weather::finished_across_a_restart(&mut s.svc, &id).await;
    let stored = common::stored(&s.results, &format!("brizo/{id}/outputs/done.txt")).await;
    assert_eq!(&stored[..], b"done");

    stop_ends_the_batch_job_and_its_container(&s).await;
}

/// The runner's plan points at the dataset where it lies; nothing of it was staged.
async fn plan_points_at_the_dataset_where_it_lies(s: &Setup, id: &str) {
    let staging = bucket(&s.moto, STAGING_BUCKET);
    let keys: Vec<String> = staging
        .list(None)
        .map(|m| m.unwrap().location.to_string())
        .collect()
        .await;
    let plan_key = keys
        .iter()
        .find(|k| k.contains(id) && k.ends_with("plan.json"))
        .unwrap_or_else(|| panic!("no plan in {keys:?}"));
    let plan: serde_json::Value =
        serde_json::from_slice(&common::stored(&staging, plan_key.as_str()).await).unwrap();
    let input = plan["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "/data/inputs/weather/0")
        .expect("the input is in the plan")
        .clone();
    assert!(
        input["url"]
            .as_str()
            .unwrap()
            .contains("/datasets/weather/daily.csv"),
        "{input}"
    );
    assert!(
        !keys
            .iter()
            .any(|k| k.contains(id) && k.contains("/in/") && k.contains("weather")),
        "the dataset was staged: {keys:?}"
    );
}

/// Stop: TerminateJob ends the Batch job and its container.
async fn stop_ends_the_batch_job_and_its_container(s: &Setup) {
    let id = s
        .svc
        .submit(job_on_s3("import time\ntime.sleep(300)\n"))
        .await;
    s.svc.wait_status(&id, 40, Duration::from_secs(120)).await;
    let res = s
        .svc
        .post(&format!("/api/v2/jobs/{id}/stop"))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    let job = s.svc.wait_finished(&id, Duration::from_secs(120)).await;
    assert_eq!(job["outcome"], "stopped", "{job}");
    let name = brizo_backend_aws::AwsBatch::job_name(&id);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while docker_names().iter().any(|n| n.starts_with(&name)) {
        assert!(
            std::time::Instant::now() < deadline,
            "the Batch job's container outlived the stop"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn caps_and_missing_data_are_refused_with_their_reason() {
    let s = setup_with("max_output_mb = 1\n[inputs]\nmax_input_mb = 1").await;
    let id = weather::output_over_the_cap_fails(&s.svc, S3_INPUT).await;
    assert!(
        s.results
            .get(&format!("brizo/{id}/outputs/big.bin").into())
            .await
            .is_err()
    );

    fetched_data_is_checked_before_submission(&s).await;
    data_that_changes_before_the_download_is_refused(&s).await;
}

/// Data the job would fetch itself is checked before anything is submitted: missing, or over
/// the cap.
async fn fetched_data_is_checked_before_submission(s: &Setup) {
    let id = s
        .svc
        .submit(job_on("print('never')", "s3://datasets/weather/absent.csv"))
        .await;
    let job = s.svc.wait_finished(&id, Duration::from_secs(120)).await;
    assert_eq!(job["status"], 31, "{job}");
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("s3://datasets/weather/absent.csv"),
        "{job}"
    );
    bucket(&s.moto, "datasets")
        .put(
            &"weather/huge.csv".into(),
            PutPayload::from(vec![b'x'; 2 << 20]),
        )
        .await
        .unwrap();
    let id = s
        .svc
        .submit(job_on("print('never')", "s3://datasets/weather/huge.csv"))
        .await;
    let job = s.svc.wait_finished(&id, Duration::from_secs(120)).await;
    assert_eq!(job["status"], 31, "{job}");
    assert!(
        job["error"].as_str().unwrap().contains("over the cap"),
        "{job}"
    );
    assert!(
        job["exitCode"].is_null(),
        "a job that never ran has no exit code: {job}"
    );
}

/// Data that changes between submission and the runner's download: the runner refuses it,
/// the algorithm never starts, and the job fails without an exit code (no work was done).
async fn data_that_changes_before_the_download_is_refused(s: &Setup) {
    let data = bucket(&s.moto, "datasets");
    data.put(&"weather/changing.csv".into(), PutPayload::from_static(CSV))
        .await
        .unwrap();
    let id = s
        .svc
        .submit(job_on(
            "print('never')",
            "s3://datasets/weather/changing.csv",
        ))
        .await;
    // Submitted to Batch; moto takes over a second to start a container.
    s.svc.wait_status(&id, 40, Duration::from_secs(120)).await;
    data.put(
        &"weather/changing.csv".into(),
        PutPayload::from_static(b"date,temp\n"),
    )
    .await
    .unwrap();
    let job = s.svc.wait_finished(&id, Duration::from_secs(120)).await;
    assert_eq!(job["outcome"], "failed", "{job}");
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("could not be prepared"),
        "{job}"
    );
    assert!(job["exitCode"].is_null(), "{job}");
    assert!(
        !s.svc.logs(&id).await.contains("never"),
        "the algorithm ran"
    );
}

fn docker_names() -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args(["ps", "-a", "--format", "{{.Names}}"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}
