//! The same trivial job through the service on Google Batch, against a bare REST jobs.create
//! -> SUCCEEDED loop (the backend's typed client, nothing else) on the same server, measured
//! interleaved in one run; prints medians, the ratio and the service's phases.
//!
//! The server is a STAND-IN for Google Batch (test code: no emulator exists) that runs each
//! job with `docker run` on this host after a 0.2 s "scheduling" pause; GCS is fake-gcs-server
//! behind the checking proxy. Both sides carry the stand-in's floor: the ratio shows what brizo
//! adds (staging the plan, the runner's downloads and uploads, polling), not what Google would
//! take (minutes to boot a VM). The stand-in stores log entries at once, so the service is told
//! not to wait for Cloud Logging to settle (`log_settle_ms = 0`). Needs dockerd, the base image, fake-gcs-server and the runner.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/phases.rs"]
mod phases;
#[path = "support/remote.rs"]
mod remote;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use brizo_backend_gcp::rest::{Batch, Container, Job, Runnable, TaskGroup, TaskSpec};
use brizo_backend_gcp::{GcpBatchConfig, ImageSource};
use brizo_test_rigs::built_runner;
use brizo_test_rigs::gcp_batch::BatchStandin;
use brizo_test_rigs::gcs::{self, Gcs};
use remote::{COMMAND, POLL};

async fn bare_run(batch: &Batch, image: &str, n: usize) -> f64 {
    let started = Instant::now();
    let id = format!("bench-bare-{n}-{}", std::process::id());
    let job = Job {
        task_groups: vec![TaskGroup {
            task_spec: TaskSpec {
                runnables: vec![Runnable {
                    container: Some(Container {
                        image_uri: image.to_string(),
                        entrypoint: Some(COMMAND.into()),
                        ..Container::default()
                    }),
                    ..Runnable::default()
                }],
                ..TaskSpec::default()
            },
            task_count: Some("1".into()),
            ..TaskGroup::default()
        }],
        labels: BTreeMap::new(),
        ..Job::default()
    };
    batch.create_job(&id, &job).await.unwrap();
    loop {
        let job = batch.get_job(&id).await.unwrap().expect("the job exists");
        match job.status.unwrap_or_default().state.as_str() {
            "SUCCEEDED" => return started.elapsed().as_secs_f64(),
            "FAILED" => panic!("the bare job failed"),
            _ => tokio::time::sleep(POLL).await,
        }
    }
}

#[tokio::main]
async fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // SAFETY: set once, before any thread reads the environment.
    unsafe { std::env::set_var("GOOGLE_SERVICE_ACCOUNT_KEY", gcs::SERVICE_ACCOUNT_KEY) };
    let gcs = Gcs::start(&root, 0, &["staging", "results"]).unwrap_or_else(|e| panic!("{e}"));
    let standin = BatchStandin::start().unwrap_or_else(|e| panic!("{e}"));
    let runner = built_runner(&root).unwrap_or_else(|e| panic!("{e}"));
    let image = brizo_backend_remote_image(common::IMAGE).await;

    // The bare loop uses the backend's REST client, with the same credentials.
    let client = brizo_backend_gcp::connect(
        GcpBatchConfig {
            project: "brizo-standin".into(),
            region: "europe-west4".into(),
            staging: "gs://staging/bare".into(),
            network: String::new(),
            subnetwork: String::new(),
            service_account: String::new(),
            instance_template: String::new(),
            machine_type: String::new(),
            batch_endpoint: standin.url.clone(),
            logging_endpoint: standin.url.clone(),
            gcs_endpoint: gcs.url.clone(),
            runner_host_path: runner.display().to_string(),
            images: ImageSource::Docker,
            url_ttl_secs: 3600,
            poll_ms: POLL.as_millis() as u64,
            log_settle_ms: 0,
        },
        "bench",
        "bare",
    )
    .unwrap();
    let batch = client.engine().batch();

    let config = format!(
        "backend = \"gcp\"\n[[backends]]\nname = \"gcp\"\nkind = \"gcp-batch\"\n[backends.gcp]\nproject = \"brizo-standin\"\n\
         region = \"europe-west4\"\nstaging = \"gs://staging/jobs\"\nbatch_endpoint = \"{batch}\"\nlogging_endpoint = \"{batch}\"\n\
         gcs_endpoint = \"{gcs}\"\nrunner_host_path = \"{runner}\"\npoll_ms = {poll}\nimages = \"docker\"\n\
         log_settle_ms = 0\n",
        batch = standin.url,
        gcs = gcs.url,
        runner = runner.display(),
        poll = POLL.as_millis()
    );
    let svc = common::Service::start_with_config(
        &[("GOOGLE_SERVICE_ACCOUNT_KEY", gcs::SERVICE_ACCOUNT_KEY)],
        &config,
    )
    .await;
    let rounds = remote::interleaved(&svc, |n| bare_run(batch, &image, n)).await;
    assert!(
        standin.violations().is_empty(),
        "{:?}",
        standin.violations()
    );
    remote::report(
        "Google Batch (a STAND-IN server running jobs on the local Docker engine; GCS is fake-gcs-server)",
        "bare REST jobs.create -> SUCCEEDED",
        rounds,
    );
}

/// The local engine's id of `image` (what the service's jobs run too, with `images = "docker"`).
async fn brizo_backend_remote_image(image: &str) -> String {
    let out = tokio::process::Command::new("docker")
        .args(["image", "inspect", "-f", "{{.Id}}", image])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{image} is not on the local engine");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
