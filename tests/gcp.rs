//! The Google Batch backend through the service:
//! - REAL: fake-gcs-server (GCS emulator) holding the dataset, the staging bucket and the
//!   results bucket; the local Docker engine running the job containers with the real static
//!   runner inside, which reads the dataset and writes outputs through V4 signed URLs.
//! - TEST CODE: the proxy in front of fake-gcs-server (XML uploads, credential and signature
//!   checks with the test service account's key).
//! - STAND-IN: Google Batch and Cloud Logging's entries:list (`brizo_test_rigs::gcp_batch`;
//!   no emulator exists), checking requests against the Batch v1 discovery document.
//!
//! A GCS dataset routed to Batch and a local one to Docker, outputs in the results bucket with
//! their hashes, stop, a service restart while a Batch job runs, an output over the cap, a
//! missing object. Built with `--features gcp` (`make test` does).
#![cfg(feature = "gcp")]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use brizo_test_rigs::built_runner;
use brizo_test_rigs::gcp_batch::BatchStandin;
use brizo_test_rigs::gcs::{self, Gcs};
use common::Service;
use common::weather::{self, CSV, SUMMARY, job_on};

/// The dataset in the publisher's bucket, which jobs fetch where it lies.
const GCS_INPUT: &str = "gs://datasets/weather/daily.csv";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Setup {
    gcs: Gcs,
    batch: BatchStandin,
    svc: Service,
}

/// `extra`: TOML appended to the service's configuration.
async fn setup_with(extra: &str) -> Setup {
    let (gcs, batch) = tokio::task::spawn_blocking(|| {
        let gcs = Gcs::start(&root(), 0, &["datasets", "staging", "results"])
            .unwrap_or_else(|e| panic!("{e}"));
        let batch = BatchStandin::start().unwrap_or_else(|e| panic!("{e}"));
        (gcs, batch)
    })
    .await
    .unwrap();
    gcs.put("datasets", "weather/daily.csv", CSV).unwrap();
    let runner = built_runner(&root()).unwrap_or_else(|e| panic!("{e}"));
    let config = format!(
        r#"
backend = "local"
[[backends]]
name = "local"
kind = "docker"
[[backends]]
name = "gcp"
kind = "gcp-batch"
near = ["gs://datasets"]
[backends.gcp]
project = "brizo-standin"
region = "europe-west4"
staging = "gs://staging/jobs"
subnetwork = "projects/brizo-standin/regions/europe-west4/subnetworks/brizo-jobs"
service_account = "{email}"
batch_endpoint = "{batch}"
logging_endpoint = "{batch}"
gcs_endpoint = "{gcs}"
runner_host_path = "{runner}"
poll_ms = 300
log_settle_ms = 1000
images = "docker"
[outputs]
results_url = "gs://results/brizo"
{extra}
"#,
        email = gcs::service_account_email(),
        batch = batch.url,
        gcs = gcs.url,
        runner = runner.display()
    );
    // object_store (results) and the backend read the same standard chain.
    let env = [
        ("GOOGLE_SERVICE_ACCOUNT_KEY", gcs::SERVICE_ACCOUNT_KEY),
        ("GOOGLE_BASE_URL", gcs.url.as_str()),
    ];
    let svc = Service::start_with_config(&env, &config).await;
    Setup { gcs, batch, svc }
}

#[tokio::test]
async fn gcs_data_runs_on_batch_local_data_on_docker_and_stop_ends_the_batch_job() {
    let s = setup_with("").await;
    let id = s.svc.submit(job_on(SUMMARY, GCS_INPUT)).await;
    let job = s.svc.wait_finished(&id, Duration::from_secs(180)).await;
    assert_eq!(
        job["outcome"],
        "succeeded",
        "{job}\n{}\n{:?}",
        s.svc.logs(&id).await,
        s.batch.violations()
    );
    assert_eq!(job["backend"], "gcp", "{job}");
    let logs = s.svc.logs(&id).await;
    assert!(logs.contains("rows 3 as uid 65534"), "{logs}");
    let stored = s
        .gcs
        .get("results", &format!("brizo/{id}/outputs/summary.txt"))
        .expect("the output is in the results bucket");
    weather::assert_summary_stored(&job, &stored);
    // The dataset went from its bucket straight into the job's container, through a signed
    // URL the proxy checked: nothing of it was staged on the service host.
    assert!(
        s.gcs
            .signed_requests()
            .iter()
            .any(|r| r == "GET /datasets/weather/daily.csv"),
        "{:?}",
        s.gcs.signed_requests()
    );

    weather::runs_local_data_on_docker(&s.svc).await;

    // Stop: jobs.delete ends the Batch job and its container.
    let id = s
        .svc
        .submit(job_on("import time\ntime.sleep(300)\n", GCS_INPUT))
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
    assert!(
        s.batch.operations().iter().any(|o| o
            .starts_with("DELETE /v1/projects/brizo-standin/locations/europe-west4/jobs/brizo-")),
        "{:?}",
        s.batch.operations()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while docker_labelled("brizo.gcp-job") > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the Batch job's container outlived the stop"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        s.batch.violations().is_empty(),
        "{:?}",
        s.batch.violations()
    );
    assert!(s.gcs.violations().is_empty(), "{:?}", s.gcs.violations());
}

#[tokio::test]
async fn a_restart_reattaches_and_caps_and_missing_objects_are_refused_with_their_reason() {
    let mut s = setup_with("max_output_mb = 1").await;
    // A job the service is killed under: the restarted service finds it on Batch again.
    let id = weather::running_slow_job(&s.svc, GCS_INPUT).await;
    weather::finished_across_a_restart(&mut s.svc, &id).await;
    assert_eq!(
        s.gcs
            .get("results", &format!("brizo/{id}/outputs/done.txt"))
            .as_deref(),
        Some(&b"done"[..])
    );
    let creates = s
        .batch
        .operations()
        .iter()
        .filter(|o| o.starts_with("POST /v1/") && o.ends_with("/jobs"))
        .count();
    assert_eq!(creates, 1, "the restarted service made a second Batch job");

    // An output over the cap comes back as nothing, with the reason.
    let id = weather::output_over_the_cap_fails(&s.svc, GCS_INPUT).await;
    assert!(
        s.gcs
            .get("results", &format!("brizo/{id}/outputs/big.bin"))
            .is_none()
    );

    // A missing object fails data provisioning, with its name, before anything is submitted.
    let before = s.batch.operations().len();
    let id = s
        .svc
        .submit(job_on("print('never')", "gs://datasets/weather/absent.csv"))
        .await;
    let job = s.svc.wait_finished(&id, Duration::from_secs(120)).await;
    assert_eq!(job["status"], 31, "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(
        error.contains("gs://datasets/weather/absent.csv") && error.contains("does not exist"),
        "{job}"
    );
    assert!(
        !s.batch.operations()[before..]
            .iter()
            .any(|o| o.starts_with("POST /v1/")),
        "a Batch job was created for missing data"
    );
}

fn docker_labelled(label: &str) -> usize {
    let out = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label={label}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}
