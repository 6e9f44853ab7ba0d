//! The same trivial job through the service on Azure Batch, against a bare Task_Add ->
//! completed loop with brizo's Batch REST client on the same server, measured interleaved in
//! one run; prints medians, the ratio and the service's phases.
//!
//! THE BATCH SERVER IS A STAND-IN (`brizo_test_rigs::azure_batch`: no Batch emulator exists):
//! it starts every task at once with `docker run` on this host, so the ratio shows what brizo
//! adds (staging the plan in Blob, the runner's downloads and uploads through SAS URLs,
//! polling), not what Azure Batch itself would take (node scheduling, image pulls). Blob is
//! real: Azurite. Needs dockerd, the base image, Azurite and the runner (`make bench`).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/phases.rs"]
mod phases;
#[path = "support/remote.rs"]
mod remote;

use std::path::PathBuf;
use std::time::Instant;

use brizo_backend_azure::rest::{
    AutoUser, Batch, ContainerSettings, JobAdd, PoolInfo, TaskAdd, TaskConstraints, UserIdentity,
};
use brizo_test_rigs::azure_batch::{self, BatchStandin};
use brizo_test_rigs::azurite::{self, Azurite};
use brizo_test_rigs::built_runner;
use remote::{COMMAND, POLL};

const BATCH_JOB: &str = "bench";

/// Task_Add of the bare command in the image, then Task_Get until it completed.
async fn bare_run(batch: &Batch, n: usize) -> f64 {
    let started = Instant::now();
    let id = format!("bench-bare-{n}");
    batch
        .add_task(
            BATCH_JOB,
            &TaskAdd {
                id: id.clone(),
                display_name: None,
                command_line: COMMAND.into(),
                container_settings: ContainerSettings {
                    image_name: common::IMAGE.into(),
                    container_run_options: String::new(),
                    working_directory: "containerImageDefault".into(),
                },
                environment_settings: vec![],
                constraints: TaskConstraints {
                    max_wall_clock_time: None,
                    retention_time: None,
                    max_task_retry_count: 0,
                },
                user_identity: UserIdentity {
                    auto_user: AutoUser {
                        scope: "task".into(),
                        elevation_level: "nonadmin".into(),
                    },
                },
            },
        )
        .await
        .unwrap();
    loop {
        let task = batch.task(BATCH_JOB, &id).await.unwrap().unwrap();
        if task.state == "completed" {
            let info = task.execution_info.unwrap_or_default();
            assert_eq!(info.exit_code, Some(0), "the bare task failed");
            return started.elapsed().as_secs_f64();
        }
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::main]
async fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let port = common::free_port();
    let blob = Azurite::start(&root, port).unwrap_or_else(|e| panic!("{e}"));
    for c in ["staging", "results"] {
        blob.create_container(c).unwrap();
    }
    let standin = BatchStandin::start().unwrap_or_else(|e| panic!("{e}"));
    let batch =
        Batch::with_shared_key(&standin.url, azure_batch::ACCOUNT, azure_batch::KEY).unwrap();
    batch
        .add_job(&JobAdd {
            id: BATCH_JOB.into(),
            pool_info: PoolInfo {
                pool_id: azure_batch::POOL.into(),
            },
        })
        .await
        .unwrap();
    let runner = built_runner(&root).unwrap_or_else(|e| panic!("{e}"));
    let config = format!(
        "backend = \"azure\"\n[[backends]]\nname = \"azure\"\nkind = \"azure-batch\"\n[backends.azure]\n\
         auth = \"shared_key\"\nbatch_url = \"{}\"\nbatch_account = \"{}\"\npool_id = \"{}\"\njob_id = \"{BATCH_JOB}\"\n\
         storage_account = \"{}\"\nstaging_container = \"staging\"\nblob_endpoint = \"{}\"\n\
         runner_host_path = \"{}\"\npoll_ms = {}\nimages = \"docker\"\n[outputs]\nresults_url = \"az://results/brizo\"\n",
        standin.url,
        azure_batch::ACCOUNT,
        azure_batch::POOL,
        azurite::ACCOUNT,
        blob.account_url(),
        runner.display(),
        POLL.as_millis()
    );
    let svc = common::Service::start_with_config(
        &[
            ("AZURE_STORAGE_USE_EMULATOR", "true"),
            ("AZURITE_BLOB_STORAGE_URL", blob.endpoint.as_str()),
            ("AZURE_BATCH_ACCESS_KEY", azure_batch::KEY),
        ],
        &config,
    )
    .await;
    let rounds = remote::interleaved(&svc, |n| bare_run(&batch, n)).await;
    assert!(
        standin.violations().is_empty(),
        "requests the specification refuses: {:?}",
        standin.violations()
    );
    remote::report(
        "Azure Batch (brizo's STAND-IN Batch server, tasks started at once with docker run; Blob is Azurite)",
        "bare REST Task_Add -> completed",
        rounds,
    );
}
