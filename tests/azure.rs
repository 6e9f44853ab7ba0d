//! The Azure Batch backend through the service:
//! - REAL: Azurite (the Azure Blob emulator) holding the dataset, the staging container and the
//!   results; the local Docker engine running each task's container with the real static
//!   runner inside, which reaches Blob through SAS URLs only; the service itself.
//! - STAND-IN: Azure Batch (no emulator exists): `brizo_test_rigs::azure_batch`, which speaks
//!   the Batch REST API, checks the requests against the official specification's schemas and
//!   runs tasks with `docker run`.
//! - The service authenticates to Batch with Microsoft Entra tokens (the default `auth`): REAL
//!   azure_identity managed identity credential, tokens from the stand-in's App Service managed
//!   identity endpoint (STAND-IN for Entra, `brizo_test_rigs::entra`).
//!
//! A Blob dataset routed to Batch and a local one to Docker, outputs in the results container
//! with their hashes, logs, stop, a service restart while a task runs, an output over the cap,
//! a missing blob. Built with `--features azure` (`make test` does).
#![cfg(feature = "azure")]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use brizo_test_rigs::azure_batch::{self, BatchStandin};
use brizo_test_rigs::azurite::{self, Azurite};
use brizo_test_rigs::{built_runner, entra};
use common::Service;
use common::weather::{self, CSV, SUMMARY, job_on};
use sha2::Digest;

const BATCH_JOB: &str = "brizo-jobs";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Setup {
    azurite: Azurite,
    batch: BatchStandin,
    svc: Service,
}

async fn setup() -> Setup {
    setup_with("").await
}

/// `extra`: TOML appended to the service's configuration.
async fn setup_with(extra: &str) -> Setup {
    let port = common::free_port();
    let (azurite, batch) = tokio::task::spawn_blocking(move || {
        let azurite = Azurite::start(&root(), port).unwrap_or_else(|e| panic!("{e}"));
        for c in ["datasets", "staging", "results"] {
            azurite.create_container(c).unwrap();
        }
        azurite
            .put_blob("datasets", "weather/daily.csv", CSV)
            .unwrap();
        let batch = BatchStandin::start().unwrap_or_else(|e| panic!("{e}"));
        (azurite, batch)
    })
    .await
    .unwrap();
    // The Batch job terraform/modules/azure makes, made here (with the account key, as
    // Terraform's provider does).
    let client = brizo_backend_azure::rest::Batch::with_shared_key(
        &batch.url,
        azure_batch::ACCOUNT,
        azure_batch::KEY,
    )
    .unwrap();
    client
        .add_job(&brizo_backend_azure::rest::JobAdd {
            id: BATCH_JOB.into(),
            pool_info: brizo_backend_azure::rest::PoolInfo {
                pool_id: azure_batch::POOL.into(),
            },
        })
        .await
        .unwrap();
    let runner = built_runner(&root()).unwrap_or_else(|e| panic!("{e}"));
    let config = format!(
        r#"
backend = "local"
[[backends]]
name = "local"
kind = "docker"
[[backends]]
name = "azure"
kind = "azure-batch"
near = ["az://{account}/datasets"]
[backends.azure]
batch_url = "{batch_url}"
batch_account = "{batch_account}"
pool_id = "{pool}"
job_id = "{BATCH_JOB}"
storage_account = "{account}"
staging_container = "staging"
blob_endpoint = "{blob}"
runner_host_path = "{runner}"
poll_ms = 300
images = "docker"
[outputs]
results_url = "az://results/brizo"
{extra}
"#,
        account = azurite::ACCOUNT,
        batch_url = batch.url,
        batch_account = azure_batch::ACCOUNT,
        pool = azure_batch::POOL,
        blob = azurite.account_url(),
        runner = runner.display()
    );
    // object_store (the results container, and the backend's Blob) in emulator mode, on this
    // Azurite; Batch through the managed identity of an App Service, the stand-in's endpoint.
    let identity = batch.identity_endpoint();
    let env = [
        ("AZURE_STORAGE_USE_EMULATOR", "true"),
        ("AZURITE_BLOB_STORAGE_URL", azurite.endpoint.as_str()),
        ("IDENTITY_ENDPOINT", identity.as_str()),
        ("IDENTITY_HEADER", entra::IDENTITY_HEADER),
    ];
    let svc = Service::start_with_config(&env, &config).await;
    Setup {
        azurite,
        batch,
        svc,
    }
}

/// The dataset in the publisher's storage account, which jobs fetch where it lies.
fn blob_input() -> String {
    format!("az://{}/datasets/weather/daily.csv", azurite::ACCOUNT)
}

fn job_on_blob(code: &str) -> serde_json::Value {
    job_on(code, &blob_input())
}

#[tokio::test]
async fn blob_data_runs_on_batch_and_local_data_on_docker() {
    let s = setup().await;
    let id = s.svc.submit(job_on_blob(SUMMARY)).await;
    let job = s.svc.wait_finished(&id, Duration::from_secs(180)).await;
    assert_eq!(
        job["outcome"],
        "succeeded",
        "{job}\n{}\n{}",
        s.svc.logs(&id).await,
        s.svc.log()
    );
    assert_eq!(job["backend"], "azure", "{job}");
    let logs = s.svc.logs(&id).await;
    assert!(logs.contains("rows 3 as uid 65534"), "{logs}");

    // The output is in the results container, with the size and hash the job reports.
    let stored = s
        .azurite
        .get_blob("results", &format!("brizo/{id}/outputs/summary.txt"))
        .unwrap()
        .expect("the output is in the results container");
    weather::assert_summary_stored(&job, &stored);

    let log = s
        .azurite
        .get_blob("results", &format!("brizo/{id}/logs/algorithm.log"))
        .unwrap()
        .expect("the log is in the results container");
    assert!(String::from_utf8_lossy(&log).contains("rows 3"));

    // The dataset went from its container straight into the task's container: the receipt's
    // digest of it is the runner's, and nothing of it was staged.
    let receipt = s.svc.receipt(&id).await;
    let input = &receipt["receipt"]["inputs"][0];
    assert_eq!(
        input["sha256"],
        hex::encode(sha2::Sha256::digest(CSV)),
        "{receipt}"
    );

    // Once finished, nothing of the job is left in the staging container.
    s.svc.wait_cleaned(&id).await;
    let staged = s.azurite.list_blobs("staging").unwrap();
    assert!(
        staged.iter().all(|b| !b.contains(&id)),
        "staging left behind: {staged:?}"
    );
    assert!(
        s.batch.violations().is_empty(),
        "requests the specification refuses: {:?}",
        s.batch.violations()
    );
    // The service's requests carried Microsoft Entra tokens (the setup's Job_Add was signed
    // with the account key, as Terraform's is).
    let credentials = s.batch.credentials();
    assert_eq!(credentials[0], "SharedKey");
    assert!(
        credentials.len() > 1 && credentials[1..].iter().all(|c| c.starts_with("Bearer ")),
        "{credentials:?}"
    );

    weather::runs_local_data_on_docker(&s.svc).await;
}

#[tokio::test]
async fn stop_terminates_and_a_restart_reattaches() {
    let mut s = setup().await;
    // A job the service is killed under: the restarted service finds its task again.
    let id = weather::running_slow_job(&s.svc, &blob_input()).await;
    weather::finished_across_a_restart(&mut s.svc, &id).await;
    let stored = s
        .azurite
        .get_blob("results", &format!("brizo/{id}/outputs/done.txt"))
        .unwrap()
        .expect("done.txt in the results");
    assert_eq!(&stored[..], b"done");
    let task =
        brizo_backend_azure::AzureBatch::task_id(&format!("{}/azure", s.svc.instance()), &id);
    assert_eq!(s.batch.task_adds(&task), 1, "the task was added twice");

    // Stop: TerminateTask ends the task and its container.
    let id = s
        .svc
        .submit(job_on_blob("import time\ntime.sleep(300)\n"))
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
    let task =
        brizo_backend_azure::AzureBatch::task_id(&format!("{}/azure", s.svc.instance()), &id);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !containers_of_task(&task).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the task's container outlived the stop"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn caps_and_missing_blobs_are_refused_with_their_reason() {
    let s = setup_with("max_output_mb = 1").await;
    let id = weather::output_over_the_cap_fails(&s.svc, &blob_input()).await;
    assert!(
        s.azurite
            .get_blob("results", &format!("brizo/{id}/outputs/big.bin"))
            .unwrap()
            .is_none()
    );

    // A blob the task would fetch itself is looked up before anything is submitted: data
    // provisioning fails, with the blob named.
    let missing = format!("az://{}/datasets/weather/absent.csv", azurite::ACCOUNT);
    let id = s.svc.submit(job_on("print('never')", &missing)).await;
    let job = s.svc.wait_finished(&id, Duration::from_secs(120)).await;
    assert_eq!(job["status"], 31, "{job}");
    assert!(job["error"].as_str().unwrap().contains(&missing), "{job}");
    assert!(job["exitCode"].is_null(), "{job}");
}

fn containers_of_task(task: &str) -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=brizo.batch-task={task}"),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}
