//! The backend conformance suite, and the GCP backend's own checks, against:
//! - REAL: fake-gcs-server (the GCS emulator) for staging, for the inputs jobs fetch
//!   themselves and the outputs they send back, reached through V4 signed URLs the runner
//!   really uses; the local Docker engine running each job's container; the real static
//!   runner inside it; object_store's Google credential chain (a service account key).
//! - TEST CODE in front of fake-gcs-server: a proxy that turns XML uploads into JSON ones and
//!   checks every bearer token and V4 signature with the test service account's public key
//!   (fake-gcs-server checks none).
//! - STAND-IN: Google Batch and Cloud Logging's entries:list (no emulator exists):
//!   `brizo_test_rigs::gcp_batch`, a test server that speaks the Batch v1 REST API, checks every
//!   request against the official discovery document's schemas, and runs jobs with `docker run`.
//!
//! Needs dockerd, the base image, fake-gcs-server and the runner: `make test` prepares them.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use brizo_backend_core::conformance::{spec, unique_job_id};
use brizo_backend_core::{BackendError, ComputeBackend, ErrorClass, Mount, RunState};
use brizo_backend_gcp::{GcpBatch, GcpBatchBackend, GcpBatchConfig, ImageSource};
use brizo_test_rigs::built_runner;
use brizo_test_rigs::gcp_batch::BatchStandin;
use brizo_test_rigs::gcs::{self, Gcs};
use futures::StreamExt;
use serde_json::Value;
use sha2::Digest;

const IMAGE: &str = "brizo/python:3.11-bookworm";
const PROJECT: &str = "brizo-standin";
const REGION: &str = "europe-west4";
const STAGING: &str = "staging";
/// A bucket of the publisher's data, which jobs fetch from themselves.
const DATA: &str = "datasets";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Rig {
    gcs: Gcs,
    batch: BatchStandin,
}

/// One fake-gcs-server and one stand-in for the whole test binary (their watchers stop them
/// when the binary ends); tests use job ids of their own.
async fn rig() -> &'static Rig {
    static RIG: OnceLock<Rig> = OnceLock::new();
    tokio::task::spawn_blocking(|| {
        RIG.get_or_init(|| {
            // SAFETY: set once, before any backend of this binary reads the environment.
            unsafe {
                // The standard chain (object_store's from_env): a service account key.
                std::env::set_var("GOOGLE_SERVICE_ACCOUNT_KEY", gcs::SERVICE_ACCOUNT_KEY);
            }
            let gcs = Gcs::start(&root(), 0, &[STAGING, DATA]).unwrap_or_else(|e| panic!("{e}"));
            let batch = BatchStandin::start().unwrap_or_else(|e| panic!("{e}"));
            Rig { gcs, batch }
        })
    })
    .await
    .unwrap()
}

/// The settings `terraform/modules/gcp` would produce, pointed at the rig.
fn config(rig: &Rig) -> GcpBatchConfig {
    GcpBatchConfig {
        project: PROJECT.into(),
        region: REGION.into(),
        staging: format!("gs://{STAGING}/jobs"),
        network: format!("projects/{PROJECT}/global/networks/brizo"),
        subnetwork: format!("projects/{PROJECT}/regions/{REGION}/subnetworks/brizo-jobs"),
        service_account: gcs::service_account_email(),
        instance_template: String::new(),
        machine_type: String::new(),
        batch_endpoint: rig.batch.url.clone(),
        logging_endpoint: rig.batch.url.clone(),
        gcs_endpoint: rig.gcs.url.clone(),
        runner_host_path: built_runner(&root())
            .unwrap_or_else(|e| panic!("{e}"))
            .display()
            .to_string(),
        images: ImageSource::Docker,
        url_ttl_secs: 3600,
        poll_ms: 200,
        // The stand-in stores log entries at once; a second still goes through the settling.
        log_settle_ms: 1000,
    }
}

async fn backend_named(name: &str) -> GcpBatchBackend {
    let rig = rig().await;
    brizo_backend_gcp::connect(config(rig), "conformance", name).unwrap_or_else(|e| panic!("{e}"))
}

async fn backend() -> GcpBatchBackend {
    backend_named("gcp").await
}

brizo_backend_core::conformance_tests!(backend().await, IMAGE);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Not part of the shared suite: which inputs a job may fetch itself.
#[tokio::test]
async fn fetches_gcs_objects_but_never_the_staging_bucket() {
    let b = backend().await;
    let c = b.capabilities();
    assert!(c.can_fetch("gs://datasets/weather/daily.csv"));
    assert!(
        !c.can_fetch("gs://staging/jobs/any/plan.json"),
        "the staging bucket holds other jobs' URLs"
    );
    assert!(!c.can_fetch("gs://datasets/weather/"));
    assert!(!c.can_fetch("s3://datasets/weather/daily.csv"));
    assert!(c.backstop && !c.isolates_network);
}

/// The shared checks of self-fetched inputs, on an object in fake-gcs-server: the runner
/// downloads it through a V4 signed URL for that one object, which the proxy checks.
#[tokio::test]
async fn fetches_inputs_itself() {
    let b = backend().await;
    let rig = rig().await;
    let content = b"station,temp\nzurich,4.5\n";
    rig.gcs.put(DATA, "weather/daily.csv", content).unwrap();
    let sha = hex(&sha2::Sha256::digest(content));
    let url = format!("gs://{DATA}/weather/daily.csv");
    brizo_backend_core::conformance::fetches_inputs_itself(&b, IMAGE, &url, content, &sha).await;
    assert!(
        rig.gcs
            .signed_requests()
            .iter()
            .any(|r| r == &format!("GET /{DATA}/weather/daily.csv")),
        "the runner did not read the input through its signed URL: {:?}",
        rig.gcs.signed_requests()
    );
    brizo_backend_core::conformance::missing_fetched_input_is_an_input_error(
        &b,
        IMAGE,
        &format!("gs://{DATA}/weather/none.csv"),
    )
    .await;
}

/// What the client sends is what the discovery document defines, and the limits, the network,
/// the service account, the labels and the backstop are on the job.
#[tokio::test]
async fn jobs_are_created_as_the_discovery_document_defines_with_the_limits_mapped() {
    let b = backend().await;
    let rig = rig().await;
    let output = tempfile::tempdir().unwrap();
    let mut s = spec(IMAGE, &["/bin/sh", "-c", "echo hi > /out/x"]);
    s.mounts = vec![Mount {
        source: output.path().into(),
        target: "/out".into(),
        read_only: false,
    }];
    s.limits.memory_bytes = 256 << 20;
    s.limits.cpus = 1.5;
    s.limits.pids = 32;
    s.backstop_secs = Some(900);
    let run = b.start(&s).await.unwrap();
    let body = rig
        .batch
        .job_body(&run.run_id)
        .expect("the stand-in has the job");
    assert_eq!(
        rig.batch.check("Job", &body),
        Vec::<String>::new(),
        "{body}"
    );
    assert_limits_network_and_labels(&body, &run.run_id, &s.job_id);
    assert_eq!(
        run.run_id,
        GcpBatch::batch_job_id("conformance/gcp", &s.job_id)
    );
    let exit = tokio::time::timeout(Duration::from_secs(120), b.wait(&s.job_id))
        .await
        .expect("the job did not end")
        .unwrap();
    assert_eq!(exit.exit_code, 0);
    b.collect(&s.job_id).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(output.path().join("x")).unwrap(),
        "hi\n",
        "the output came back through the signed upload URL"
    );
    assert!(
        rig.gcs
            .signed_requests()
            .iter()
            .any(|r| r.starts_with("PUT /staging/jobs/conformance/gcp/")),
        "{:?}",
        rig.gcs.signed_requests()
    );
    found_by_label_and_removed_with_its_job(&b, &run.run_id, &s.job_id).await;
    only_the_refusals_a_test_asks_for(rig);
}

/// An operator finds brizo's jobs by label; removing the ended job deletes its Batch job too.
async fn found_by_label_and_removed_with_its_job(b: &GcpBatchBackend, run_id: &str, job_id: &str) {
    let labelled = b
        .engine()
        .batch()
        .jobs_labelled("brizo_run", run_id)
        .await
        .unwrap();
    assert_eq!(labelled.len(), 1, "{labelled:?}");
    assert!(
        labelled[0]
            .name
            .as_deref()
            .is_some_and(|n| n.ends_with(&format!("/jobs/{run_id}")))
    );
    b.remove(job_id).await.unwrap();
    let left = b.engine().batch().get_job(run_id).await.unwrap();
    assert!(
        left.as_ref().is_none_or(|j| j
            .status
            .as_ref()
            .is_some_and(|s| s.state == "DELETION_IN_PROGRESS")),
        "{left:?}"
    );
}

/// The only refusals on this shared stand-in are those a test asks for.
fn only_the_refusals_a_test_asks_for(rig: &Rig) {
    let violations: Vec<String> = rig
        .batch
        .violations()
        .into_iter()
        .filter(|v| !v.contains("Not-A-Label"))
        .collect();
    assert!(violations.is_empty(), "{violations:?}");
    assert!(
        rig.gcs.violations().is_empty(),
        "{:?}",
        rig.gcs.violations()
    );
}

/// The job body of `jobs_are_created_as_the_discovery_document_defines_with_the_limits_mapped`
/// carries its spec's limits (memory 256 MiB, 1.5 CPUs, 32 pids, a 900 s backstop), the
/// isolation options, the rig's network and service account, and brizo's labels.
fn assert_limits_network_and_labels(body: &Value, run_id: &str, job_id: &str) {
    let task = &body["taskGroups"][0]["taskSpec"];
    assert_eq!(task["maxRunDuration"], "900s", "{body}");
    assert_eq!(task["maxRetryCount"], 0, "{body}");
    assert_eq!(task["computeResource"]["cpuMilli"], "1500", "{body}");
    let memory: u64 = task["computeResource"]["memoryMib"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(memory >= 256, "{body}");
    let container = &task["runnables"][0]["container"];
    assert_eq!(container["entrypoint"], brizo_runner::RUNNER_PATH, "{body}");
    assert!(
        container["imageUri"]
            .as_str()
            .is_some_and(|i| i.starts_with("sha256:")),
        "the image the local engine has, by id: {body}"
    );
    let options = container["options"].as_str().unwrap();
    brizo_test_rigs::assert_isolating_options(options, &[]);
    let network = &body["allocationPolicy"]["network"]["networkInterfaces"][0];
    assert_eq!(network["noExternalIpAddress"], true, "{body}");
    assert_eq!(
        network["subnetwork"],
        format!("projects/{PROJECT}/regions/{REGION}/subnetworks/brizo-jobs")
    );
    assert_eq!(
        body["allocationPolicy"]["serviceAccount"]["email"],
        gcs::service_account_email()
    );
    assert_eq!(body["labels"]["brizo_run"], run_id);
    assert_eq!(
        body["labels"]["brizo_job"],
        brizo_backend_gcp::label_value(job_id)
    );
}

/// A service restarted after submitting (a backend made anew, nothing in memory) finds its job
/// by its derived name, does not create a second one, and follows it to its end.
#[tokio::test]
async fn a_restarted_service_re_attaches_to_its_job() {
    let rig = rig().await;
    let first = backend_named("restart").await;
    let s = spec(IMAGE, &["/bin/sh", "-c", "sleep 2; echo after-restart"]);
    let run = first.start(&s).await.unwrap();
    drop(first);
    let second = backend_named("restart").await;
    assert_eq!(second.state(&s.job_id).await.unwrap(), RunState::Running);
    let again = second.start(&s).await.unwrap();
    assert_eq!(again.run_id, run.run_id);
    assert_eq!(rig.batch.creates(&run.run_id), 1);
    let exit = tokio::time::timeout(Duration::from_secs(120), second.wait(&s.job_id))
        .await
        .expect("the job did not end")
        .unwrap();
    assert_eq!(exit.exit_code, 0);
    let mut logs = String::new();
    let following = std::time::Instant::now();
    let mut stream = second.logs(&s.job_id);
    while let Some(chunk) = stream.next().await {
        logs.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    assert!(logs.contains("after-restart"), "{logs}");
    // Cloud Logging stores entries late: the log of an ended job is read for the settling
    // time (a second here) before it counts as complete.
    assert!(
        following.elapsed() >= Duration::from_millis(900),
        "the log was taken as complete after {:?}",
        following.elapsed()
    );
    second.remove(&s.job_id).await.unwrap();
}

/// Throttling (429 RESOURCE_EXHAUSTED) is transient: the engine waits it out. On a stand-in of
/// its own, so that no other test is throttled.
#[tokio::test]
async fn throttling_is_transient() {
    let rig = rig().await;
    let batch = tokio::task::spawn_blocking(BatchStandin::start)
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut settings = config(rig);
    settings.batch_endpoint = batch.url.clone();
    settings.logging_endpoint = batch.url.clone();
    let b = brizo_backend_gcp::connect(settings, "conformance", "throttled").unwrap();
    batch.throttle(1);
    let s = spec(IMAGE, &["true"]);
    let mut last = None;
    let mut throttled = 0;
    for _ in 0..5 {
        match b.start(&s).await {
            Ok(run) => {
                last = Some(run);
                break;
            }
            Err(e) => {
                assert_eq!(e.class(), ErrorClass::Transient, "{e}");
                throttled += 1;
            }
        }
    }
    assert_eq!(
        throttled, 1,
        "the throttled answer did not reach the caller"
    );
    assert!(last.is_some(), "the start never got through");
    b.wait(&s.job_id).await.unwrap();
    b.remove(&s.job_id).await.unwrap();
}

/// An output over the cap is cut by the runner, and the job says so.
#[tokio::test]
async fn an_output_over_the_cap_is_refused() {
    let b = backend().await;
    let output = tempfile::tempdir().unwrap();
    let mut s = spec(
        IMAGE,
        &["/bin/sh", "-c", "head -c 3000000 /dev/zero > /out/big"],
    );
    s.mounts = vec![Mount {
        source: output.path().into(),
        target: "/out".into(),
        read_only: false,
    }];
    s.limits.output_bytes = 1 << 20;
    b.start(&s).await.unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(120), b.wait(&s.job_id)).await;
    let collected = b.collect(&s.job_id).await;
    let big = output.path().join("big");
    assert!(
        !big.exists() || std::fs::metadata(&big).unwrap().len() <= 1 << 20,
        "more than the cap came back ({exit:?}, {collected:?})"
    );
    assert!(
        exit.as_ref()
            .is_ok_and(|e| e.as_ref().is_ok_and(|e| e.exit_code != 0))
            || collected.is_err(),
        "an output over the cap went unnoticed: {exit:?} {collected:?}"
    );
    b.remove(&s.job_id).await.unwrap();
}

/// A missing object fails the start as an input error naming it.
#[tokio::test]
async fn a_missing_object_is_an_input_error_with_its_name() {
    let b = backend().await;
    let mut s = spec(IMAGE, &["true"]);
    s.job_id = unique_job_id("missing");
    s.fetch = vec![brizo_backend_core::RemoteFile {
        url: format!("gs://{DATA}/nothing/here.csv"),
        target: "/data/inputs/x/0".into(),
        max_bytes: 1 << 20,
    }];
    match b.start(&s).await {
        Err(e @ BackendError::Input { .. }) => {
            assert!(
                e.to_string().contains("gs://datasets/nothing/here.csv"),
                "{e}"
            );
            assert!(e.to_string().contains("does not exist"), "{e}");
        }
        other => panic!("expected an input error, got {other:?}"),
    }
    b.remove(&s.job_id).await.unwrap();
}

/// The stand-in's refusals reach the client with their class: a job Batch refuses
/// (INVALID_ARGUMENT, here an upper-case label) is a bad job, one it does not know is absent,
/// and deleting it again is not an error.
#[tokio::test]
async fn refusals_are_classed_as_batch_answers_them() {
    let b = backend().await;
    let rig = rig().await;
    let batch = b.engine().batch();
    use brizo_backend_gcp::rest::{Container, Job, Runnable, TaskGroup, TaskSpec};
    let job = Job {
        task_groups: vec![TaskGroup {
            task_spec: TaskSpec {
                runnables: vec![Runnable {
                    container: Some(Container {
                        image_uri: IMAGE.into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            },
            ..Default::default()
        }],
        labels: [("brizo_job".to_string(), "Not-A-Label".to_string())].into(),
        ..Default::default()
    };
    let refused = batch.create_job("brizo-refused", &job).await.unwrap_err();
    assert_eq!(refused.class(), ErrorClass::BadJob, "{refused}");
    assert!(
        refused.to_string().contains("INVALID_ARGUMENT"),
        "{refused}"
    );
    assert!(
        rig.batch
            .violations()
            .iter()
            .any(|v| v.contains("Not-A-Label")),
        "{:?}",
        rig.batch.violations()
    );
    assert!(batch.get_job("brizo-never-made").await.unwrap().is_none());
    batch
        .delete_job("brizo-never-made", "test")
        .await
        .expect("deleting what is gone is not an error");
}
