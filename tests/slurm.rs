//! The Slurm backend through the service, against a real one-node Slurm cluster (slurmctld,
//! slurmd, slurmrestd with JWT) that `scripts/slurm.sh` installs and starts here, and stops by
//! PID: a job on cluster data routed to Slurm with its logs readable while it runs, local data
//! on Docker, Slurm's accounting set from the job's limits, stop, a service restart while a
//! Slurm job runs, a job over its memory and one over its time. Each job's container runs on
//! the local Docker engine with the real static runner inside. And a v1 job, under an agreement
//! on a local chain with the real keeper contracts, routed to Slurm by its dataset and settled.
//! Built with `--features slurm` (`make test` does).
#![cfg(feature = "slurm")]

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use brizo_test_rigs::built_runner;
use brizo_test_rigs::slurm::Slurm;
use common::{Service, weather};
use futures::StreamExt;
use serde_json::json;

const CSV: &str = "date,temp\n2026-01-01,3.5\n2026-01-02,4.5\n2026-01-03,-1.0\n";
const PATIENCE: Duration = Duration::from_secs(120);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One cluster for this test binary (its watcher stops it when the binary ends).
async fn cluster() -> &'static Slurm {
    static CLUSTER: OnceLock<Slurm> = OnceLock::new();
    tokio::task::spawn_blocking(|| {
        CLUSTER.get_or_init(|| Slurm::start(&root()).unwrap_or_else(|e| panic!("{e}")))
    })
    .await
    .unwrap()
}

/// A service with Docker as the default and the cluster next to `datasets/cluster`, the part of
/// its dataset root that stands for the cluster's shared filesystem. `extra`: TOML appended.
async fn service(extra: &str) -> Service {
    service_with(&[], extra).await
}

async fn service_with(env: &[(&str, &str)], extra: &str) -> Service {
    let cluster = cluster().await;
    let runner = built_runner(&root()).unwrap_or_else(|e| panic!("{e}"));
    let staging = cluster.dir.join(format!("staging-{}", common::free_port()));
    let config = format!(
        r#"
backend = "local"
[[backends]]
name = "local"
kind = "docker"
[[backends]]
name = "cluster"
kind = "slurm"
near = ["file://{{data_dir}}/datasets/cluster"]
[backends.slurm]
url = "{url}"
token_file = "{token}"
staging_dir = "{staging}"
shared = ["{{data_dir}}/datasets/cluster"]
runner_path = "{runner}"
images = "docker"
poll_ms = 200
{extra}
"#,
        url = cluster.url,
        token = cluster.token_file.display(),
        staging = staging.display(),
        runner = runner.display(),
    );
    Service::start_with_config(env, &config).await
}

fn job_on(code: &str, input: &str) -> serde_json::Value {
    json!({"image": common::IMAGE, "entrypoint": "python3 $ALGO", "algorithm": {"rawcode": code},
        "inputs": [{"url": input, "name": "weather"}]})
}

const SUMMARY: &str = r#"
import pathlib, os, time
print('started', flush=True)
time.sleep(3)
rows = pathlib.Path('/data/inputs/weather/0').read_text().splitlines()[1:]
temps = [float(r.split(',')[1]) for r in rows]
print('rows', len(rows), 'as uid', os.getuid(), 'nets', sorted(os.listdir('/sys/class/net')), flush=True)
pathlib.Path('/data/outputs/summary.txt').write_text('mean %.2f\n' % (sum(temps) / len(temps)))
"#;

/// `scontrol show job` of the Slurm job brizo submitted for `id`, one `Key=Value` line.
async fn slurm_job(id: &str) -> String {
    let out = cluster()
        .await
        .client("scontrol", &["show", "job", "-o"])
        .unwrap();
    out.lines()
        .find(|l| l.contains(&format!("JobName=brizo-{id} ")))
        .unwrap_or_else(|| panic!("no Slurm job for {id} in:\n{out}"))
        .to_string()
}

#[tokio::test]
async fn cluster_data_runs_on_slurm_with_logs_while_it_runs() {
    let svc = service("").await;
    let input = svc.dataset("cluster/weather/daily.csv", CSV);
    let id = svc.submit(job_on(SUMMARY, &input)).await;

    // The log is readable, and followable, before the job ends.
    let response = svc
        .get(&format!("/api/v2/jobs/{id}/logs?follow=true"))
        .send()
        .await
        .unwrap();
    let mut stream = response.bytes_stream();
    let mut seen = String::new();
    let deadline = Instant::now() + PATIENCE;
    while !seen.contains("started") {
        let chunk = tokio::time::timeout_at(deadline.into(), stream.next())
            .await
            .expect("no log while the job runs")
            .expect("the log ended")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let job = svc.job(&id).await;
    assert!(
        job["status"].as_i64().unwrap() < 70,
        "the job had already finished: {job}"
    );

    let job = svc.wait_finished(&id, PATIENCE).await;
    assert_eq!(
        job["outcome"],
        "succeeded",
        "{job}\n{}",
        svc.logs(&id).await
    );
    assert_eq!(job["backend"], "cluster", "{job}");
    assert!(
        job["backendReason"]
            .as_str()
            .unwrap()
            .contains("datasets/cluster"),
        "{job}"
    );
    let logs = svc.logs(&id).await;
    assert!(logs.contains("rows 3 as uid 65534 nets ['lo']"), "{logs}");
    common::weather::assert_summary_stored(&job, b"mean 2.33\n");

    // Slurm's accounting carries the job's limits: memory (the algorithm's and the container's
    // in-memory folders), one CPU, and a time limit just over the job's own.
    let line = slurm_job(&id).await;
    assert!(line.contains("MinMemoryNode="), "{line}");
    assert!(line.contains("NumCPUs=1"), "{line}");
    assert!(!line.contains("TimeLimit=UNLIMITED"), "{line}");

    // The dataset was bound where it lies, not copied: the staging folder never held it.
    svc.wait_cleaned(&id).await;

    // The same service sends a job on other local data to Docker.
    let local = svc.dataset("elsewhere/weather.csv", CSV);
    let id = svc.submit(job_on("print('on docker')", &local)).await;
    let job = svc.wait_finished(&id, PATIENCE).await;
    assert_eq!(job["outcome"], "succeeded", "{job}");
    assert_eq!(job["backend"], "local", "{job}");
}

#[tokio::test]
async fn stop_ends_the_container_and_a_restart_reattaches() {
    let mut svc = service("").await;
    let input = svc.dataset("cluster/weather/daily.csv", CSV);
    let id = weather::running_slow_job(&svc, &input).await;
    let job = weather::finished_across_a_restart(&mut svc, &id).await;
    assert!(
        job["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["name"] == "done.txt"),
        "{job}"
    );

    // Stop: Slurm cancels the job and the job's script stops its container.
    let id = svc
        .submit(job_on(
            "import time\nprint('waiting', flush=True)\ntime.sleep(300)\n",
            &input,
        ))
        .await;
    svc.wait_status(&id, 40, PATIENCE).await;
    let deadline = Instant::now() + PATIENCE;
    while !svc.logs(&id).await.contains("waiting") {
        assert!(Instant::now() < deadline, "the job never printed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let res = svc
        .post(&format!("/api/v2/jobs/{id}/stop"))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    let job = svc.wait_finished(&id, PATIENCE).await;
    assert_eq!(job["outcome"], "stopped", "{job}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !containers_of_job(&id).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the job's container outlived the stop"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let line = slurm_job(&id).await;
    assert!(line.contains("JobState=CANCELLED"), "{line}");
}

#[tokio::test]
async fn memory_and_time_limits_hold_on_slurm() {
    let svc = service("[limits]\nmemory_mb = 64").await;
    let input = svc.dataset("cluster/weather/daily.csv", CSV);
    let id = svc
        .submit(job_on(
            "x = bytearray(400 << 20)\nprint('survived')",
            &input,
        ))
        .await;
    let job = svc.wait_finished(&id, PATIENCE).await;
    assert_eq!(
        job["outcome"],
        "out_of_memory",
        "{job}\n{}",
        svc.logs(&id).await
    );
    assert!(!svc.logs(&id).await.contains("survived"));

    let mut body = job_on(
        "import time\nprint('sleeping', flush=True)\ntime.sleep(600)",
        &input,
    );
    // Long enough to start on a busy cluster: a job still queued at its deadline fails as never
    // started instead (no work done), which is not what this checks.
    body["timeoutSeconds"] = json!(8);
    let id = svc.submit(body).await;
    let job = svc.wait_finished(&id, PATIENCE).await;
    assert_eq!(job["outcome"], "timed_out", "{job}");
    assert!(
        job["error"].as_str().unwrap().contains("8 s limit"),
        "{job}"
    );
    assert!(svc.logs(&id).await.contains("sleeping"));
    svc.wait_cleaned(&id).await;
    assert!(
        containers_of_job(&id).is_empty(),
        "the timed-out job's container is still there"
    );
}

fn containers_of_job(id: &str) -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label=brizo.job-id={id}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// The Squid-compatible flow with the dataset on the cluster: a consumer orders, starts the
/// published algorithm through the v1 API, the job runs on Slurm, and the publisher is paid.
#[tokio::test]
async fn a_v1_job_on_cluster_data_runs_on_slurm_and_settles() {
    use brizo::chain::dev::{DEV_KEYS, DevChain, DevOptions};
    use brizo::chain::signing_provider;
    use brizo::squid::{Algorithm, Consumer};

    let dir = tempfile::tempdir().unwrap();
    let artifacts = dir.path().join("artifacts");
    let chain = DevChain::start(&DevOptions::new(common::free_port(), artifacts.clone()))
        .await
        .unwrap_or_else(|e| panic!("{e}\n(install the chain tools with scripts/chain-deps.sh)"));
    let env = [
        ("BRIZO_CHAIN__KEEPER_URL", chain.url.as_str()),
        ("BRIZO_CHAIN__ARTIFACTS_DIR", artifacts.to_str().unwrap()),
        ("BRIZO_PROVIDER_KEY", DEV_KEYS[2]),
    ];
    let svc = service_with(&env, "").await;
    let (dataset, algorithm) = publish_on_the_cluster(&svc, &chain).await;

    let (consumer_chain, _) = signing_provider(&chain.url, DEV_KEYS[3]).unwrap();
    let consumer = Consumer {
        http: reqwest::Client::new(),
        service: svc.base.clone(),
        signer: DEV_KEYS[3].parse().unwrap(),
        chain: consumer_chain,
        addresses: chain.addresses.clone(),
    };
    let terms = consumer.order(&dataset, 0).await.unwrap();
    let before = consumer.balance(terms.publisher).await.unwrap();
    let job = consumer
        .start(terms.agreement_id, &Algorithm::Did(algorithm))
        .await
        .unwrap();
    let status = common::world::settled(&svc, &consumer, &terms, &job).await;
    assert_eq!(status["outcome"], "succeeded", "{status}\n{}", svc.log());
    assert_eq!(status["settlement"]["state"], "paid", "{status}");
    assert_eq!(
        svc.job(&job).await["backend"],
        "cluster",
        "the v1 job did not run on Slurm"
    );
    assert_eq!(
        &consumer
            .download(status["resultsUrls"][0].as_str().unwrap(), &job)
            .await
            .unwrap()[..],
        b"12"
    );
    assert_eq!(
        consumer.balance(terms.publisher).await.unwrap() - before,
        terms.price
    );
    // The Slurm job brizo submitted for it is in the cluster's records.
    assert!(
        slurm_job(&job).await.contains("JobState=COMPLETED"),
        "{}",
        slurm_job(&job).await
    );
}

/// The publisher's dataset, whose file is on the cluster's storage, and its summing
/// algorithm, both published on `chain`: their DIDs.
async fn publish_on_the_cluster(
    svc: &common::Service,
    chain: &brizo::chain::dev::DevChain,
) -> (String, String) {
    use alloy::primitives::U256;
    use brizo::assets::publish::{self, AlgorithmTerms, Asset, DatasetTerms};
    use brizo::chain::dev::DEV_KEYS;
    use brizo::chain::signing_provider;

    let (publisher_chain, _) = signing_provider(&chain.url, DEV_KEYS[2]).unwrap();
    let publisher: alloy::signers::local::PrivateKeySigner = DEV_KEYS[2].parse().unwrap();
    let (image, tag) = common::IMAGE.split_once(':').unwrap();
    let data = svc.dataset("cluster/numbers/values.txt", "3\n4\n5\n");
    let dataset = publish::publish(
        &svc.base,
        &publisher_chain,
        &chain.addresses,
        &publisher,
        &Asset::Dataset(DatasetTerms {
            name: "numbers on the cluster".into(),
            files: vec![data],
            price: U256::from(7u64) * U256::from(10u64).pow(U256::from(18u64)),
            timeout_secs: 120,
            allow_raw_algorithm: false,
            trusted_algorithms: vec![],
            allow_network_access: false,
            requires_approval: false,
            review_outputs: false,
            encrypt_results: false,
            sample: vec![],
            containers: vec![(image.into(), tag.into())],
        }),
    )
    .await
    .unwrap();
    let code = svc.dataset(
        "algorithms/sum.py",
        "import pathlib\ntotal = sum(int(x) for p in pathlib.Path('/data/inputs').rglob('*') if p.is_file() for x in p.read_text().split())\n\
         print('sum', total, flush=True)\npathlib.Path('/data/outputs/sum.txt').write_text(str(total))\n",
    );
    let algorithm = publish::publish(
        &svc.base,
        &publisher_chain,
        &chain.addresses,
        &publisher,
        &Asset::Algorithm(AlgorithmTerms {
            name: "sum".into(),
            file: code,
            image: image.into(),
            tag: tag.into(),
            entrypoint: "python3 $ALGO".into(),
        }),
    )
    .await
    .unwrap();

    (dataset, algorithm)
}
