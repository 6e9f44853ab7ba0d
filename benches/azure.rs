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

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use brizo_backend_azure::rest::{
    AutoUser, Batch, ContainerSettings, JobAdd, PoolInfo, TaskAdd, TaskConstraints, UserIdentity,
};
use brizo_test_rigs::azure_batch::{self, BatchStandin};
use brizo_test_rigs::azurite::{self, Azurite};
use brizo_test_rigs::built_runner;
use serde_json::{Value, json};

const ROUNDS: usize = 7;
const WARMUP: usize = 1;
const COMMAND: &str = "/bin/true";
const POLL: Duration = Duration::from_millis(50);
const BATCH_JOB: &str = "bench";

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[xs.len() / 2]
}

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
    let job = json!({"image": common::IMAGE, "entrypoint": COMMAND, "algorithm": {"rawcode": "# nothing"}, "timeoutSeconds": 120});

    let (mut bare, mut service) = (vec![], vec![]);
    let mut phases: HashMap<String, Vec<f64>> = HashMap::new();
    // Interleaved, so that drift of the machine affects both sides alike.
    for n in 0..WARMUP + ROUNDS {
        let b = bare_run(&batch, n).await;
        let started = Instant::now();
        let id = svc.submit(job.clone()).await;
        let done: Value = svc.poll_finished(&id, Duration::from_secs(120), POLL).await;
        let s = started.elapsed().as_secs_f64();
        assert_eq!(done["outcome"], "succeeded", "{done}\n{}", svc.log());
        svc.wait_cleaned(&id).await;
        if n < WARMUP {
            continue;
        }
        bare.push(b);
        service.push(s);
        for (phase, ms) in svc.job(&id).await["timings"].as_object().unwrap() {
            phases
                .entry(phase.clone())
                .or_default()
                .push(ms.as_f64().unwrap() / 1000.0);
        }
    }
    assert!(
        standin.violations().is_empty(),
        "requests the specification refuses: {:?}",
        standin.violations()
    );
    let (b, s) = (median(bare), median(service));
    println!(
        "trivial job ({COMMAND} in {}) on Azure Batch, {ROUNDS} rounds after {WARMUP} warm-up, medians.",
        common::IMAGE
    );
    println!(
        "  The Batch server is brizo's STAND-IN (tasks start at once with docker run), Blob is Azurite:"
    );
    println!(
        "  bare REST Task_Add -> completed           {:>8.1} ms",
        b * 1000.0
    );
    println!(
        "  brizo, submit -> finished (client poll)   {:>8.1} ms   ratio {:.2}",
        s * 1000.0,
        s / b
    );
    println!("  per phase (server):");
    for phase in [
        "queuedMs",
        "stagingMs",
        "startingMs",
        "runningMs",
        "filteringMs",
        "publishingMs",
        "cleanupMs",
    ] {
        if let Some(xs) = phases.remove(phase) {
            println!(
                "    {:<14} {:>8.1} ms",
                phase.trim_end_matches("Ms"),
                median(xs) * 1000.0
            );
        }
    }
}
